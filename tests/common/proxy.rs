//! Network faults made inside the test, between the agent and a real Janus:
//! a TCP proxy that holds every HTTP request for a while (a slow Janus), and
//! a UDP relay that can drop everything (a firewall).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TCP proxy to a port on 127.0.0.1 that holds each request for the
/// current delay before passing it on: every Janus reply comes that much
/// later. A request is what the client sends on a connection before the
/// server answers, so requests on a kept-alive connection are each held too.
pub struct DelayProxy {
    /// The port it listens on.
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
}

impl DelayProxy {
    /// Listens on a free port on 127.0.0.1 and passes connections to
    /// `upstream`, holding each request `delay`.
    pub fn start(upstream: u16, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        Self::serve(listener, upstream, delay)
    }

    /// Serves `listener` (bound by the caller, perhaps in another network
    /// namespace); connections to `upstream` are made from the calling
    /// thread's namespace.
    pub fn serve(listener: TcpListener, upstream: u16, delay: Duration) -> Self {
        let port = listener.local_addr().expect("proxy address").port();
        let proxy = Self {
            port,
            delay_ms: Arc::new(AtomicU64::new(millis(delay))),
            held: Arc::default(),
        };
        let (delay, held) = (Arc::clone(&proxy.delay_ms), Arc::clone(&proxy.held));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                // Janus down (restarting): the client sees the connection close.
                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                    let hold = Hold {
                        delay_ms: Arc::clone(&delay),
                        held: Arc::clone(&held),
                    };
                    relay_connection(client, server, hold);
                }
            }
        });
        proxy
    }

    /// How many requests it has held so far.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Holds each request from now on `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(millis(delay), Ordering::Relaxed);
    }
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

/// A proxy's delay, and its count of requests held.
struct Hold {
    delay_ms: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
}

/// Copies both ways between `client` and `server`; the first bytes the
/// client sends after each reply (and on a new connection) are held for
/// the delay.
fn relay_connection(client: TcpStream, server: TcpStream, hold: Hold) {
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let answered = Arc::new(AtomicBool::new(true));
    let answered2 = Arc::clone(&answered);
    std::thread::spawn(move || {
        copy(client, server, || {
            if answered.swap(false, Ordering::Relaxed) {
                let ms = hold.delay_ms.load(Ordering::Relaxed);
                if ms > 0 {
                    hold.held.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(ms));
                }
            }
        });
    });
    std::thread::spawn(move || {
        copy(server2, client2, || {
            answered2.store(true, Ordering::Relaxed)
        })
    });
}

/// Copies `from` to `to` until either end closes, calling `before` ahead of
/// each chunk.
fn copy(mut from: TcpStream, mut to: TcpStream, mut before: impl FnMut()) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        before();
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Datagrams relayed by the test: what arrives at `outer` (bound where the
/// sender sends) leaves through `inner` (connected to the receiver), and
/// what comes back to `inner` goes to the last sender. Cut, it drops
/// everything both ways, as a firewall would.
pub struct UdpRelay {
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl UdpRelay {
    /// Relays between `outer` and `inner` until dropped.
    pub fn start(outer: UdpSocket, inner: UdpSocket) -> Self {
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        for socket in [&outer, &inner] {
            // Wake now and then to notice `stop`.
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("UDP read timeout");
        }
        let (outer2, inner2) = (
            outer.try_clone().expect("clone UDP socket"),
            inner.try_clone().expect("clone UDP socket"),
        );
        let (cut2, stop2, peer2) = (Arc::clone(&cut), Arc::clone(&stop), Arc::clone(&peer));
        std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                // Errors: timeouts, and ICMP refusals while the receiver is down.
                if let Ok((n, from)) = outer2.recv_from(&mut buf) {
                    *peer2.lock().expect("peer lock") = Some(from);
                    if !cut2.load(Ordering::Relaxed) {
                        let _ = inner2.send(&buf[..n]);
                    }
                }
            }
        });
        let (cut2, stop2) = (Arc::clone(&cut), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(n) = inner.recv(&mut buf) {
                    let to = *peer.lock().expect("peer lock");
                    if let (false, Some(to)) = (cut2.load(Ordering::Relaxed), to) {
                        let _ = outer.send_to(&buf[..n], to);
                    }
                }
            }
        });
        Self { cut, stop }
    }

    /// Drops everything (`true`) or relays again (`false`).
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
