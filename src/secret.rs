//! A string that must never reach a log: API secret, token, room secret, pin.
//!
//! [`Secret`] has no `Display`, its `Debug` prints `***`, and it serializes
//! masked (the agent never writes its configuration back, so the only use of
//! serialization is `broadcast-agent check`). Reading the value takes an
//! explicit [`Secret::expose`], which is easy to find in review.

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
    fn empty_is_none() {
        assert!(Secret::new("").is_none());
    }
}
