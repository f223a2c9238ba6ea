// Deployment defaults for the viewer page. Edit this file on the web server.
// `?janus=<url>` picks another server only if it is listed in `servers`.
window.BROADCAST_CONFIG = {
  // Janus REST endpoint: an absolute URL, or a path on the page's own server
  // (e.g. a reverse proxy that forwards /janus to Janus on port 8088).
  janus: "/janus",
  // The servers `?janus=<url>` may choose (relative URLs count from this
  // page); a link naming any other is shown as an error, never followed.
  // Unset: only `janus` above.
  // servers: ["/janus", "https://janus2.example.org/janus"],
  // Edge Janus servers that relay the broadcast to more viewers than one
  // Janus carries (docs/edges.md): each viewer watches the video from one of
  // them (a random one that answers; another one if it dies) and still talks
  // and chats through `janus` above. Unset or empty: the video comes from `janus`.
  // edges: ["https://edge1.example.org/janus", "https://edge2.example.org/janus"],
  // ICE servers for viewers behind NAT: a STUN server, and the same TURN
  // server as janus.jcfg's nat.turn_server, with viewer credentials, e.g.
  //   { urls: "stun:stun.example.org:3478" },
  //   { urls: "turn:turn.example.org:3478?transport=udp", username: "viewer", credential: "change-me" },
  //   { urls: "turns:turn.example.org:5349?transport=tcp", username: "viewer", credential: "change-me" },
  iceServers: [],
  // Only when Janus requires them (janus.jcfg `api_secret` / token auth):
  // apiSecret: "change-me",
  // token: "...",
};
