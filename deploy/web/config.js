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
