//! Host names to addresses without blocking the caller for long: the lookup
//! (getaddrinfo, which waits as long as the resolver configuration says)
//! runs on a thread of its own, and the caller waits at most a timeout.
//!
//! GStreamer's `udpsink` resolves its `host` synchronously when the property
//! is set, so pipelines are handed an address from here instead of a name.
//! A lookup that outlives its timeout finishes (and its thread ends) in the
//! background; nothing waits for it.

use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

/// The longest wait for one lookup.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Why a host name has no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The resolver answered with an error.
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        host: String,
        #[source]
        source: io::Error,
    },
    /// The resolver did not answer in time.
    #[error("cannot resolve {host}: no answer within {} ms", .timeout.as_millis())]
    TimedOut { host: String, timeout: Duration },
    /// The resolver answered with no address.
    #[error("cannot resolve {host}: no address")]
    NoAddress { host: String },
}

/// The address of `host` (an IP address, bracketed or not, is taken as is
/// without a lookup), waiting at most `timeout`.
pub fn address(host: &str, timeout: Duration) -> Result<IpAddr, ResolveError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse() {
        return Ok(ip);
    }
    let (answer, answered) = mpsc::channel();
    let name = bare.to_owned();
    let lookup = std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let found = (name.as_str(), 0).to_socket_addrs().map(|mut a| a.next());
            let _ = answer.send(found);
        });
    if let Err(source) = lookup {
        return Err(ResolveError::Lookup {
            host: host.to_owned(),
            source,
        });
    }
    match answered.recv_timeout(timeout) {
        Ok(Ok(Some(addr))) => Ok(addr.ip()),
        Ok(Ok(None)) => Err(ResolveError::NoAddress {
            host: host.to_owned(),
        }),
        Ok(Err(source)) => Err(ResolveError::Lookup {
            host: host.to_owned(),
            source,
        }),
        Err(_) => Err(ResolveError::TimedOut {
            host: host.to_owned(),
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_no_lookup() {
        let v4 = address("192.0.2.7", Duration::ZERO).expect("an IPv4 address");
        assert_eq!(v4.to_string(), "192.0.2.7");
        let v6 = address("[::1]", Duration::ZERO).expect("a bracketed IPv6 address");
        assert_eq!(v6.to_string(), "::1");
    }

    #[test]
    fn names_are_looked_up() {
        let local = address("localhost", TIMEOUT).expect("localhost resolves");
        assert!(local.is_loopback(), "{local}");
        let missing = address("no-such-host.invalid", TIMEOUT);
        assert!(
            matches!(missing, Err(ResolveError::Lookup { .. })),
            "{missing:?}"
        );
    }
}
