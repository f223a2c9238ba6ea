//! Values that must never reach a log: API secret, token, room secret, pin
//! ([`Secret`]), and the SRTP key of the host stream ([`SrtpKey`]).
//!
//! Neither has `Display`; `Debug` prints `***`, and they serialize masked
//! (the agent never writes its configuration back, so the only use of
//! serialization is `broadcast-agent check`). Reading the value takes an
//! explicit `expose`, which is easy to find in review.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret prints and serializes as.
const MASK: &str = "***";

/// A non-empty secret string.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; an empty string is no secret at all.
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        (!value.is_empty()).then_some(Self(value))
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

/// An SRTP master key and salt for AES_CM_128_HMAC_SHA1_80 (16 + 14
/// bytes), made fresh for each mountpoint the agent creates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SrtpKey([u8; SrtpKey::LEN]);

impl SrtpKey {
    /// Bytes of key and salt.
    pub const LEN: usize = 30;
    /// Janus's `srtpsuite` for this key: AES_CM_128_HMAC_SHA1_80.
    pub const SUITE: u8 = 80;

    /// A new random key (the OS-seeded CSPRNG).
    pub fn generate() -> Self {
        let mut key = [0; Self::LEN];
        rand::Rng::fill(&mut rand::rng(), &mut key[..]);
        Self(key)
    }

    /// Key and salt, for the encrypting element.
    pub fn expose(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Key and salt in base64, as Janus's `srtpcrypto` takes them.
    pub fn to_base64(self) -> Secret {
        Secret(base64(&self.0))
    }
}

impl fmt::Debug for SrtpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for SrtpKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

/// Standard base64 with padding (RFC 4648), for the one key Janus takes so.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Deserializes an optional secret where `""` (the documented "unset") is `None`.
pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.and_then(Secret::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_are_masked() {
        let secret = Secret::new("hunter2").expect("non-empty");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(
            serde_json::to_string(&secret).expect("serializes"),
            "\"***\""
        );
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn srtp_keys_are_fresh_masked_and_base64() {
        let (a, b) = (SrtpKey::generate(), SrtpKey::generate());
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "***");
        assert_eq!(serde_json::to_string(&a).expect("serializes"), "\"***\"");
        assert_eq!(a.to_base64().expose().len(), 40);
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn empty_is_none() {
        assert!(Secret::new("").is_none());
    }
}
