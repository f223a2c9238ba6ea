//! Why a pass failed: Janus refused or could not be reached, or something on
//! this side (no route, no thread) got in the way.

use crate::janus::JanusError;
use crate::state::{Conflict, ErrorClass, Failure};

/// Why a pass did not reach its goal.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A request to Janus failed.
    #[error(transparent)]
    Janus(#[from] JanusError),
    /// No local address routes to Janus, so `speaker.host` cannot be derived.
    #[error("no route to Janus host {host} to pick speaker.host from: {source}")]
    NoRoute {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// A host name in the settings does not resolve.
    #[error("{key} = {host:?} does not resolve: {source}")]
    Resolve {
        key: &'static str,
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// Someone else holds the room's id on Janus.
    #[error("{0}")]
    Conflict(Conflict),
    /// The long-poll thread of a new session could not be started.
    #[error("cannot start the long-poll thread: {0}")]
    LongPoll(#[source] std::io::Error),
    /// Janus kept changing under the pass: it gave up after this many requests.
    #[error("no steady state after {0} requests")]
    Unsettled(usize),
    /// The blocking thread running the pass died.
    #[error("pass aborted: {0}")]
    Aborted(String),
    /// `stream.transport = "webrtc"`, and one end cannot do it.
    #[error("stream.transport = \"webrtc\": {0}; fix that, or set stream.transport = \"auto\" (plain RTP where WebRTC cannot run)")]
    NoWebrtc(&'static str),
}

impl PassError {
    /// Retrying as is cannot help: the operator must change something.
    pub fn needs_operator(&self) -> bool {
        match self {
            Self::Janus(e) => e.needs_operator(),
            Self::Conflict(_) | Self::NoWebrtc(_) => true,
            Self::NoRoute { .. }
            | Self::Resolve { .. }
            | Self::LongPoll(_)
            | Self::Unsettled(_)
            | Self::Aborted(_) => false,
        }
    }

    /// The error as the published state shows it.
    pub fn failure(&self) -> Failure {
        let cause = match self {
            Self::Janus(e) => e.cause(),
            Self::NoRoute { source, .. }
            | Self::Resolve { source, .. }
            | Self::LongPoll(source) => source.to_string(),
            Self::Conflict(c) => format!("{} {} is not this agent's", c.what, c.id),
            Self::Unsettled(_) | Self::Aborted(_) => self.to_string(),
            Self::NoWebrtc(what) => (*what).to_owned(),
        };
        Failure {
            message: self.to_string(),
            cause: lowercase_first(&cause),
            class: self.class(),
        }
    }

    /// What kind of failure this is, for metrics.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Janus(JanusError::Transport { .. }) => ErrorClass::Unreachable,
            Self::Janus(JanusError::Tls { .. }) => ErrorClass::Tls,
            Self::Janus(JanusError::Http { .. }) => ErrorClass::Http,
            Self::Janus(JanusError::Core { .. }) => ErrorClass::Core,
            Self::Janus(JanusError::Plugin { .. }) => ErrorClass::Plugin,
            Self::Janus(JanusError::Protocol(_)) => ErrorClass::Protocol,
            Self::Conflict(_) => ErrorClass::Conflict,
            Self::NoRoute { .. }
            | Self::Resolve { .. }
            | Self::LongPoll(_)
            | Self::Unsettled(_)
            | Self::Aborted(_)
            | Self::NoWebrtc(_) => ErrorClass::Local,
        }
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_keeps_the_fix_of_operator_errors() {
        let denied = PassError::Janus(JanusError::Core {
            code: 403,
            reason: "Unauthorized request (wrong or missing secret/token)".into(),
        });
        let failure = denied.failure();
        assert!(
            failure.message.starts_with("Janus error 403"),
            "{failure:?}"
        );
        assert!(
            failure.cause.starts_with("unauthorized request")
                && failure.cause.contains("janus.token"),
            "{failure:?}"
        );
        assert!(denied.needs_operator());
        assert_eq!(failure.class, ErrorClass::Core);
    }

    #[test]
    fn the_cause_of_an_unreachable_janus_is_the_io_error() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = PassError::Janus(JanusError::Transport {
            url: "http://127.0.0.1:1/janus".into(),
            source: Box::new(ureq::Error::Io(refused)),
        });
        let failure = error.failure();
        assert!(failure
            .message
            .starts_with("cannot reach Janus at http://127.0.0.1:1/janus"));
        assert_eq!(failure.cause, "connection refused");
        assert_eq!(failure.class, ErrorClass::Unreachable);
        assert!(!error.needs_operator());
    }
}
