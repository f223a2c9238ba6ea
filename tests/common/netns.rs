//! A network of its own for the agent, joined to the test's Janus only
//! through the test: its API through a [`DelayProxy`], its media and the
//! room's audio through [`UdpRelay`]s. Janus binds its mountpoint ports on
//! every address, so on one loopback nothing could stand between the agent
//! and Janus; in a private network namespace (`unshare(CLONE_NEWNET)`, root)
//! the agent's 127.0.0.1 is the test's relays. Sockets keep the namespace
//! they were made in, so one relay holds an end in each.

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::proxy::{DelayProxy, UdpRelay};

/// A private network namespace with its loopback up.
pub struct Netns {
    handle: File,
}

impl Netns {
    /// Makes one (on a thread of its own, which then ends: the handle keeps
    /// the namespace).
    pub fn new() -> Self {
        let handle = std::thread::spawn(|| {
            // SAFETY: unshare only changes this thread's namespaces.
            let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(unshared, 0, "unshare(CLONE_NEWNET) (needs root)");
            loopback_up();
            File::open("/proc/thread-self/ns/net").expect("open the namespace")
        })
        .join()
        .expect("make a network namespace");
        Self { handle }
    }

    /// Runs `f` on this thread inside the namespace: the sockets it makes
    /// and the processes it starts live there.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let home = File::open("/proc/thread-self/ns/net").expect("open this namespace");
        enter(&self.handle);
        let out = f();
        enter(&home);
        out
    }
}

/// The addresses of [`Netns::with_lan`].
pub const LAN: [&str; 2] = ["10.77.0.1", "10.77.0.2"];

impl Netns {
    /// A namespace with a network besides loopback: a veth pair holding
    /// [`LAN`] (a /24) and a default route through it. WebRTC needs it:
    /// neither Janus nor webrtcbin gathers loopback candidates, and Janus
    /// wants a default route.
    pub fn with_lan() -> Self {
        let netns = Self::new();
        let (a, b) = (format!("{}/24", LAN[0]), format!("{}/24", LAN[1]));
        netns.run(|| {
            for args in [
                &[
                    "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
                ][..],
                &["addr", "add", &a, "dev", "lan0"],
                &["addr", "add", &b, "dev", "lan1"],
                &["link", "set", "lan0", "up"],
                &["link", "set", "lan1", "up"],
                &["route", "add", "default", "via", LAN[0]],
            ] {
                run_tool("ip", args);
            }
        });
        netns
    }

    /// Drops every UDP datagram to the LAN's addresses (`true`: all of
    /// WebRTC, nothing of the API or the mountpoint's loopback), or lets them
    /// through again; nftables on the input hook.
    pub fn cut_lan_udp(&self, cut: bool) {
        self.lose_lan_udp(cut.then_some(100));
    }

    /// Drops `percent` of the UDP datagrams to the LAN's addresses, at
    /// random, or (None) none again.
    pub fn lose_lan_udp(&self, percent: Option<u8>) {
        self.run(|| {
            let Some(percent) = percent else {
                run_tool("nft", &["delete", "table", "inet", "cut"]);
                return;
            };
            run_tool("nft", &["add", "table", "inet", "cut"]);
            run_tool(
                "nft",
                &["add chain inet cut input { type filter hook input priority 0 ; }"],
            );
            // nftables takes `numgen random mod 100 < N` for N up to 99 only.
            let share = match percent {
                100.. => String::new(),
                _ => format!("numgen random mod 100 < {percent} "),
            };
            let rule = format!(
                "add rule inet cut input ip daddr 10.77.0.0/24 meta l4proto udp {share}drop"
            );
            run_tool("nft", &[&rule]);
        });
    }
}

impl Netns {
    /// Caps the UDP to the LAN's addresses (both ways: all of WebRTC) at
    /// `kbit_s` (nftables `limit rate over ... drop` on the input hook: a
    /// policer, no queue), or (None) lifts the cap. A counter before the
    /// limit counts what was sent, dropped or not: see [`Netns::lan_udp_bytes`].
    pub fn cap_lan_udp(&self, kbit_s: Option<u32>) {
        self.run(|| {
            let Some(kbit_s) = kbit_s else {
                run_tool("nft", &["delete", "table", "inet", "cap"]);
                return;
            };
            // A cap before goes (and its count with it).
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", "inet", "cap"])
                .stderr(std::process::Stdio::null())
                .status();
            run_tool("nft", &["add", "table", "inet", "cap"]);
            run_tool(
                "nft",
                &["add chain inet cap input { type filter hook input priority 0 ; }"],
            );
            let lan = "ip daddr 10.77.0.0/24 meta l4proto udp";
            run_tool("nft", &[&format!("add rule inet cap input {lan} counter")]);
            let bytes = kbit_s * 1000 / 8;
            run_tool(
                "nft",
                &[&format!(
                    "add rule inet cap input {lan} limit rate over {bytes} bytes/second drop"
                )],
            );
        });
    }

    /// The bytes of UDP to the LAN's addresses counted since the cap was
    /// set ([`Netns::cap_lan_udp`]); None without a cap.
    pub fn lan_udp_bytes(&self) -> Option<u64> {
        let out = self.run(|| {
            std::process::Command::new("nft")
                .args(["list", "table", "inet", "cap"])
                .output()
                .ok()
        })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let after = text.split(" counter packets ").nth(1)?;
        let bytes = after.split(" bytes ").nth(1)?;
        bytes.split_whitespace().next()?.parse().ok()
    }
}

/// Runs a network tool (`ip`, `nft`) and insists that it worked.
fn run_tool(tool: &str, args: &[&str]) {
    let status = std::process::Command::new(tool)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("run {tool} (apt-get install iproute2 nftables): {e}"));
    assert!(status.success(), "{tool} {args:?} failed");
}

/// Sets this thread's namespace's `lo` up (as `ip link set lo up`).
fn loopback_up() {
    // SAFETY: a plain socket for the interface ioctls, closed below; the
    // request is zeroed, named "lo", and read back before it is changed.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(socket >= 0, "a socket for the interface ioctls");
        let mut request: libc::ifreq = std::mem::zeroed();
        for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *to = *from as libc::c_char;
        }
        let read = libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request);
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let set = libc::ioctl(socket, libc::SIOCSIFFLAGS, &request);
        libc::close(socket);
        assert!(read == 0 && set == 0, "set lo up (needs root)");
    }
}

fn enter(namespace: &File) {
    // SAFETY: setns on a namespace file we hold open; affects this thread.
    let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(entered, 0, "setns(CLONE_NEWNET) (needs root)");
}

/// The agent's side of the network: inside [`Link::netns`], `127.0.0.1`
/// serves Janus's API on [`Link::api`]'s port and takes the media ports;
/// the room's audio comes back in on the speaker port.
pub struct Link {
    /// Where the agent runs.
    pub netns: Netns,
    /// The agent's way to Janus's REST API (its delay is the test's).
    pub api: DelayProxy,
    media: Vec<UdpRelay>,
    _speaker: Option<UdpRelay>,
}

impl Link {
    /// A link to the Janus REST API on `janus_port` and its mountpoint
    /// `media_ports` on the test's loopback; with `speaker_port`, Janus's
    /// forwarder to 127.0.0.1 on that port reaches the agent.
    pub fn new(janus_port: u16, media_ports: &[u16], speaker_port: Option<u16>) -> Self {
        let netns = Netns::new();
        let (listener, inside) = netns.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind the API port");
            let inside: Vec<_> = media_ports.iter().map(|p| udp_bound(*p)).collect();
            (listener, inside)
        });
        let api = DelayProxy::serve(listener, janus_port, Duration::ZERO);
        let media = inside
            .into_iter()
            .zip(media_ports)
            .map(|(outer, port)| UdpRelay::start(outer, udp_connected(*port)))
            .collect();
        let speaker = speaker_port.map(|port| {
            let inner = netns.run(|| udp_connected(port));
            UdpRelay::start(udp_bound(port), inner)
        });
        Self {
            netns,
            api,
            media,
            _speaker: speaker,
        }
    }

    /// `janus.url` for an agent inside.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/janus", self.api.port)
    }

    /// Drops all media to Janus and back (`true`), or relays it again.
    pub fn cut_media(&self, cut: bool) {
        for relay in &self.media {
            relay.cut(cut);
        }
    }
}

fn udp_bound(port: u16) -> UdpSocket {
    UdpSocket::bind(("127.0.0.1", port)).expect("bind a relay port")
}

fn udp_connected(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a relay socket");
    socket
        .connect(("127.0.0.1", port))
        .expect("connect a relay socket");
    socket
}
