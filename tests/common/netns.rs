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
