//! Serde adapters between the documented integer keys (`*_ms`, `*_s`) and
//! the [`Duration`]s the settings hold, for `#[serde(with = "...")]`.
//!
//! The keys stay integers in the file and in `BROADCAST_AGENT__*` variables
//! (whose text the `config` crate parses); only the Rust side is typed.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole number of the unit, as the user wrote it; saturates (validated ranges are far below).
fn whole(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// `*_ms` keys: an integer number of milliseconds.
pub(super) mod millis {
    use super::*;

    /// Reads milliseconds.
    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }

    /// Writes milliseconds.
    pub(in crate::config) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        whole(value.as_millis()).serialize(serializer)
    }
}

/// `*_s` keys: an integer number of seconds.
pub(super) mod seconds {
    use super::*;

    /// Reads seconds.
    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }

    /// Writes seconds.
    pub(in crate::config) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_secs().serialize(serializer)
    }
}

/// `*_s` keys where 0 means "never": `None`.
pub(super) mod seconds_or_never {
    use super::*;

    /// Reads seconds; 0 is `None`.
    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let seconds = u64::deserialize(deserializer)?;
        Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
    }

    /// Writes seconds; `None` is 0.
    pub(in crate::config) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.map_or(0, |d| d.as_secs()).serialize(serializer)
    }
}

/// A duration in whole milliseconds, for messages in the unit of a `*_ms` key.
pub(super) fn as_millis(value: Duration) -> u64 {
    whole(value.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    struct Keys {
        #[serde(with = "millis")]
        wait_ms: Duration,
        #[serde(with = "seconds")]
        length_s: Duration,
        #[serde(with = "seconds_or_never")]
        limit_s: Option<Duration>,
    }

    #[test]
    fn integer_keys_round_trip_as_durations() {
        let text = "wait_ms = 250\nlength_s = 3\nlimit_s = 0\n";
        let keys: Keys = toml::from_str(text).expect("valid");
        assert_eq!(
            keys,
            Keys {
                wait_ms: Duration::from_millis(250),
                length_s: Duration::from_secs(3),
                limit_s: None,
            }
        );
        assert_eq!(toml::to_string(&keys).expect("serializes"), text);
    }

    #[test]
    fn never_is_zero_and_other_values_are_seconds() {
        let keys: Keys =
            toml::from_str("wait_ms = 0\nlength_s = 0\nlimit_s = 60\n").expect("valid");
        assert_eq!(keys.limit_s, Some(Duration::from_secs(60)));
    }

    #[test]
    fn negative_values_are_refused() {
        let e = toml::from_str::<Keys>("wait_ms = -1\nlength_s = 0\nlimit_s = 0\n")
            .expect_err("negative");
        assert!(e.to_string().contains("wait_ms"), "{e}");
    }
}
