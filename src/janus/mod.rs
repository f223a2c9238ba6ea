//! A blocking client for the Janus REST API (HTTP long-poll transport).
//!
//! Every reply arrives with HTTP 200, errors included: core errors as
//! `{"janus":"error","error":{"code":..}}`, plugin errors as a `success` whose
//! `plugindata.data` carries `error_code`. Both become a typed [`JanusError`]
//! carrying the code. Each request has a fresh transaction id and carries
//! `apisecret`/`token` when configured; each reply is read with a size cap.
//!
//! The client blocks (ureq): callers on the async runtime run it with
//! `spawn_blocking`.

pub mod audiobridge;
#[cfg(test)]
mod hostile;
pub mod longpoll;
pub mod rooms;
pub mod streaming;
pub mod textroom;
mod tls;
pub mod videoroom;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::JanusSettings;
use crate::secret::Secret;

pub use tls::TlsSetupError;

/// Largest reply body the client reads; Janus replies are a few KiB.
const MAX_REPLY_BYTES: u64 = 1 << 20;

/// Janus holds a long-poll open this long before answering `keepalive`.
const LONG_POLL_HOLD: Duration = Duration::from_secs(30);

/// Janus core error codes the agent acts on.
pub mod code {
    /// The request lacks a valid `apisecret` or `token`.
    pub const UNAUTHORIZED: u16 = 403;
    /// The token may not use the plugin it asked to attach.
    pub const UNAUTHORIZED_PLUGIN: u16 = 405;
    /// The session does not exist (expired, destroyed, or Janus restarted).
    pub const SESSION_NOT_FOUND: u16 = 458;
    /// The plugin handle does not exist.
    pub const HANDLE_NOT_FOUND: u16 = 459;
    /// `attach` to a plugin this Janus has not loaded.
    pub const PLUGIN_NOT_FOUND: u16 = 460;
}

/// What went wrong talking to Janus.
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    /// Janus could not be reached, or the connection broke.
    #[error("cannot reach Janus at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// The TLS handshake failed: Janus's certificate is not trusted, or
    /// not for this host. `problem` names the cause and the setting that
    /// fixes it. `clock` says the certificate is not valid *yet*: on a
    /// Pi that booted before NTP set its clock, that passes by itself.
    #[error("Janus at {url}: TLS: {problem}")]
    Tls {
        url: String,
        problem: String,
        clock: bool,
    },
    /// HTTP itself failed (Janus answers every API call with 200).
    #[error("Janus at {url} answered HTTP {status}")]
    Http { url: String, status: u16 },
    /// Janus's core refused the request.
    #[error("Janus error {code}: {reason}{}", core_hint(*code))]
    Core { code: u16, reason: String },
    /// A plugin refused the request.
    #[error("{plugin} error {code}: {reason}{}", plugin_hint(reason))]
    Plugin {
        plugin: &'static str,
        code: u16,
        reason: String,
    },
    /// The reply is not what the API documents.
    #[error("unexpected reply from Janus: {0}")]
    Protocol(String),
}

impl JanusError {
    /// The Janus error code, core or plugin, if Janus gave one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Core { code, .. } | Self::Plugin { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The session (or its handle) no longer exists on Janus.
    pub fn is_session_gone(&self) -> bool {
        matches!(self, Self::Core { code, .. }
            if *code == code::SESSION_NOT_FOUND || *code == code::HANDLE_NOT_FOUND)
    }

    /// Whether this (from `attach`) says this Janus offers no such plugin:
    /// it is not loaded, or the token may not use it.
    pub fn is_plugin_unavailable(&self) -> bool {
        matches!(self, Self::Core { code, .. }
            if *code == code::PLUGIN_NOT_FOUND || *code == code::UNAUTHORIZED_PLUGIN)
    }

    /// Whether a plugin refused the request for want of its `admin_key`
    /// (missing or wrong): the plugin is locked with one.
    pub fn lacks_admin_key(&self) -> bool {
        matches!(self, Self::Plugin { reason, .. } if reason.contains("admin_key"))
    }

    /// The cause alone, without the context: the I/O error behind an
    /// unreachable Janus, the TLS problem, the reason Janus gave and its fix.
    pub fn cause(&self) -> String {
        match self {
            Self::Transport { source, .. } => match source.as_ref() {
                ureq::Error::Io(io) => io.to_string(),
                other => other.to_string(),
            },
            Self::Tls { problem, .. } => problem.clone(),
            Self::Http { status, .. } => format!("HTTP {status}"),
            Self::Core { code, reason } => format!("{reason}{}", core_hint(*code)),
            Self::Plugin { reason, .. } => format!("{reason}{}", plugin_hint(reason)),
            Self::Protocol(what) => format!("unexpected reply: {what}"),
        }
    }

    /// Retrying as is cannot help: credentials or settings must change.
    /// Such errors are retried slowly. A reverse proxy's 502/503/504 (Janus
    /// behind it restarting) and a certificate not valid yet (this
    /// machine's clock before NTP) pass by themselves: retried quickly.
    pub fn needs_operator(&self) -> bool {
        match self {
            Self::Core { code, .. } => matches!(
                *code,
                code::UNAUTHORIZED | code::UNAUTHORIZED_PLUGIN | code::PLUGIN_NOT_FOUND
            ),
            Self::Http { status, .. } => !matches!(status, 502..=504),
            Self::Tls { clock, .. } => !clock,
            Self::Plugin { .. } => true,
            Self::Transport { .. } | Self::Protocol(_) => false,
        }
    }
}

/// What to check after a core error, for the codes an operator must fix.
fn core_hint(code: u16) -> &'static str {
    match code {
        code::UNAUTHORIZED => {
            "; check janus.api_secret / janus.token against the api_secret / tokens Janus has"
        }
        code::UNAUTHORIZED_PLUGIN => {
            "; janus.token must be allowed to use the AudioBridge and Streaming plugins"
        }
        code::PLUGIN_NOT_FOUND => "; Janus must load the AudioBridge and Streaming plugins",
        _ => "",
    }
}

/// What to set after a plugin error that names a missing or wrong key.
fn plugin_hint(reason: &str) -> &'static str {
    if reason.contains("admin_key") {
        "; set room.admin_key (or room.admin_key_file) to the plugin's admin_key"
    } else {
        ""
    }
}

/// The TLS problem behind a transport error, in words with the fix, and
/// whether it is a certificate not valid yet; `None` when the error is not
/// about TLS. ureq reports a failed handshake as an I/O error that wraps the
/// rustls error.
fn tls_problem(error: &ureq::Error) -> Option<(String, bool)> {
    let rustls_error = match error {
        ureq::Error::Rustls(e) => e,
        ureq::Error::Tls(reason) => return Some(((*reason).to_owned(), false)),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    Some(match rustls_error {
        rustls::Error::InvalidCertificate(cert) => {
            let problem = CertProblem::of(cert);
            let words = format!(
                "certificate not trusted ({}); {}",
                problem.name(),
                problem.fix()
            );
            (words, problem == CertProblem::NotValidYet)
        }
        other => (
            format!("{other}; check that janus.url points at Janus's HTTPS port"),
            false,
        ),
    })
}

/// Why Janus's certificate was refused, sorted by what fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CertProblem {
    /// Not signed by a trusted CA (a self-signed certificate without `ca_file`).
    UnknownIssuer,
    /// The signature does not verify against the issuer.
    BadSignature,
    /// Not made for the host in `janus.url`.
    WrongName,
    /// Past its end date.
    Expired,
    /// Before its start date: often this machine's clock, before NTP set it.
    NotValidYet,
    /// A CA certificate served as the server's own.
    CaAsServer,
    /// Anything else, in rustls's words.
    Other(String),
}

impl CertProblem {
    fn of(cert: &rustls::CertificateError) -> Self {
        use rustls::CertificateError as C;
        match cert {
            C::UnknownIssuer => Self::UnknownIssuer,
            C::BadSignature => Self::BadSignature,
            C::NotValidForName | C::NotValidForNameContext { .. } => Self::WrongName,
            C::Expired | C::ExpiredContext { .. } => Self::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => Self::NotValidYet,
            C::Other(other)
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                Self::CaAsServer
            }
            other => Self::Other(other.to_string()),
        }
    }

    /// The name rustls (or webpki) gives the problem.
    fn name(&self) -> &str {
        match self {
            Self::UnknownIssuer => "UnknownIssuer",
            Self::BadSignature => "BadSignature",
            Self::WrongName => "NotValidForName",
            Self::Expired => "Expired",
            Self::NotValidYet => "NotValidYet",
            Self::CaAsServer => "CaUsedAsEndEntity",
            Self::Other(words) => words,
        }
    }

    /// What to change.
    fn fix(&self) -> &'static str {
        match self {
            Self::UnknownIssuer => "set janus.ca_file to the CA or certificate Janus serves",
            Self::BadSignature => {
                "a signature does not match its key: check that janus.ca_file is the CA or \
                 certificate your Janus serves, and that janus.url reaches your Janus"
            }
            Self::WrongName => {
                "the host in janus.url must be one the certificate names (subjectAltName)"
            }
            Self::Expired | Self::NotValidYet => {
                "renew Janus's certificate, or check this machine's clock"
            }
            Self::CaAsServer => {
                "Janus serves a CA certificate: set janus.ca_file to exactly that certificate \
                 (Janus's cert_pem) to pin it, or serve one made with \
                 -addext basicConstraints=critical,CA:FALSE (or signed by a CA set as janus.ca_file)"
            }
            Self::Other(_) => "check Janus's certificate (cert_pem) and janus.ca_file",
        }
    }
}

/// A Janus session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

/// A plugin handle id within a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandleId(pub u64);

/// A plugin attached to a session: where plugin messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    /// The session the handle lives in.
    pub session: SessionId,
    /// The handle itself.
    pub id: HandleId,
}

/// What a long-poll brought back.
#[derive(Debug)]
pub enum Polled {
    /// Janus had nothing to say within its hold time; the session is alive.
    Keepalive,
    /// Asynchronous events for the session's handles.
    Events(Vec<Value>),
}

/// A plugin's asynchronous reply, brought by the long-poll.
#[derive(Debug, Clone)]
pub struct PluginEvent {
    /// The plugin's data.
    pub data: Value,
    /// The session description that came with it (an answer), if any.
    pub jsep: Option<Value>,
}

/// Requests waiting for their asynchronous reply, by transaction.
type Waiters = Mutex<HashMap<String, mpsc::SyncSender<Value>>>;

/// A blocking Janus REST client. Cheap to share behind an `Arc`.
pub struct Client {
    agent: ureq::Agent,
    url: String,
    api_secret: Option<Secret>,
    token: Option<Secret>,
    timeout: Duration,
    transaction_prefix: u32,
    transactions: AtomicU64,
    waiters: Waiters,
}

/// The envelope of every Janus reply.
#[derive(Debug, Deserialize)]
struct Reply {
    janus: String,
    transaction: Option<String>,
    data: Option<Value>,
    error: Option<ErrorBody>,
    plugindata: Option<PluginData>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
struct PluginData {
    data: Value,
}

impl Client {
    /// A client for the endpoint in `settings`. https is always verified,
    /// against the system's roots plus `ca_file`; a certificate in
    /// `ca_file` that Janus serves as is, is pinned (see [`tls`]).
    pub fn new(settings: &JanusSettings) -> Result<Self, TlsSetupError> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(settings.request_timeout))
            .user_agent(concat!("broadcast-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = tls::agent(config, settings.ca_file.as_deref())?;
        Ok(Self {
            agent,
            url: settings.url.trim_end_matches('/').to_owned(),
            api_secret: settings.api_secret.clone(),
            token: settings.token.clone(),
            timeout: settings.request_timeout,
            transaction_prefix: rand::random(),
            transactions: AtomicU64::new(0),
            waiters: Waiters::default(),
        })
    }

    /// The REST endpoint this client talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates a session.
    pub fn create_session(&self) -> Result<SessionId, JanusError> {
        let data = self.post(&self.url, json!({ "janus": "create" }))?;
        id_in(data).map(SessionId)
    }

    /// Attaches `plugin` (e.g. `janus.plugin.audiobridge`) to a session.
    pub fn attach(&self, session: SessionId, plugin: &str) -> Result<Handle, JanusError> {
        let url = format!("{}/{}", self.url, session.0);
        let data = self.post(&url, json!({ "janus": "attach", "plugin": plugin }))?;
        Ok(Handle {
            session,
            id: HandleId(id_in(data)?),
        })
    }

    /// Destroys a session and its handles. Rooms and mountpoints it made stay.
    pub fn destroy_session(&self, session: SessionId) -> Result<(), JanusError> {
        let url = format!("{}/{}", self.url, session.0);
        self.post(&url, json!({ "janus": "destroy" })).map(drop)
    }

    /// Sends a synchronous plugin request and returns the plugin's `data`;
    /// an `error_code` in it becomes [`JanusError::Plugin`].
    pub fn plugin_request(
        &self,
        handle: Handle,
        plugin: &'static str,
        body: Value,
    ) -> Result<Value, JanusError> {
        let url = format!("{}/{}/{}", self.url, handle.session.0, handle.id.0);
        let reply = self.send(&url, json!({ "janus": "message", "body": body }))?;
        if reply.plugindata.is_none() {
            return Err(JanusError::Protocol(format!(
                "{} reply without plugindata",
                reply.janus
            )));
        }
        plugin_data(plugin, reply.plugindata.map(|p| p.data))
    }

    /// Sends a plugin request that Janus answers later, on the long-poll
    /// (`ack` now, the plugin's event then), with `jsep` if given; waits
    /// for that event up to the request timeout. The session's long-poll
    /// must be running ([`longpoll::spawn`]).
    pub fn plugin_request_async(
        &self,
        handle: Handle,
        plugin: &'static str,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<PluginEvent, JanusError> {
        let url = format!("{}/{}/{}", self.url, handle.session.0, handle.id.0);
        let transaction = self.next_transaction();
        let (deliver, delivered) = mpsc::sync_channel(1);
        self.waiting(|w| w.insert(transaction.clone(), deliver));
        let mut message = json!({ "janus": "message", "body": body });
        if let (Some(map), Some(jsep)) = (message.as_object_mut(), jsep) {
            map.insert("jsep".into(), jsep);
        }
        let sent = self.send_as(&url, message, &transaction);
        let event = match sent {
            Ok(reply) if reply.janus == "ack" => {
                delivered.recv_timeout(self.timeout).map_err(|_| {
                    JanusError::Protocol(format!(
                        "no reply from {plugin} within {} ms",
                        self.timeout.as_millis()
                    ))
                })
            }
            Ok(reply) => Ok(json!({ "plugindata": reply.plugindata.map(|p| p.data) })),
            Err(e) => Err(e),
        };
        self.waiting(|w| w.remove(&transaction));
        let event = event?;
        let data = plugin_data(
            plugin,
            event.get("plugindata").and_then(|p| p.get("data")).cloned(),
        )?;
        Ok(PluginEvent {
            data,
            jsep: event.get("jsep").cloned(),
        })
    }

    /// Hands a long-poll event to the request waiting for it; returns it
    /// when none waits.
    fn deliver(&self, event: Value) -> Option<Value> {
        let transaction = event.get("transaction").and_then(Value::as_str);
        let waiter = transaction.and_then(|t| self.waiting(|w| w.remove(t)));
        match waiter {
            Some(waiter) => waiter.try_send(event).err().map(|e| match e {
                mpsc::TrySendError::Full(v) | mpsc::TrySendError::Disconnected(v) => v,
            }),
            None => Some(event),
        }
    }

    fn waiting<T>(&self, f: impl FnOnce(&mut HashMap<String, mpsc::SyncSender<Value>>) -> T) -> T {
        let mut waiters = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut waiters)
    }

    /// Detaches a plugin handle: its PeerConnection, if any, ends with it.
    pub fn detach(&self, handle: Handle) -> Result<(), JanusError> {
        let url = format!("{}/{}/{}", self.url, handle.session.0, handle.id.0);
        self.post(&url, json!({ "janus": "detach" })).map(drop)
    }

    /// Waits for events on a session (long-poll). Returns [`Polled::Keepalive`]
    /// after Janus's hold time of 30 s when nothing happened; each call keeps
    /// the session alive.
    pub fn poll(&self, session: SessionId) -> Result<Polled, JanusError> {
        let mut url = format!("{}/{}?maxev=10", self.url, session.0);
        self.append_auth_query(&mut url);
        let response = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(LONG_POLL_HOLD + self.timeout))
            .build()
            .call();
        let value: Value = read_json(response, &self.url)?;
        match value {
            Value::Array(events) => Ok(Polled::Events(events)),
            single => {
                let reply: Reply = serde_json::from_value(single.clone())
                    .map_err(|e| JanusError::Protocol(format!("long-poll: {e}")))?;
                match reply.janus.as_str() {
                    "keepalive" => Ok(Polled::Keepalive),
                    "error" => Err(core_error(reply)),
                    _ => Ok(Polled::Events(vec![single])),
                }
            }
        }
    }

    /// POSTs a core request and returns its `data`.
    fn post(&self, url: &str, body: Value) -> Result<Value, JanusError> {
        let reply = self.send(url, body)?;
        Ok(reply.data.unwrap_or(Value::Null))
    }

    /// POSTs a request with a fresh transaction and the credentials; checks
    /// the reply's transaction and turns a core error into [`JanusError::Core`].
    fn send(&self, url: &str, body: Value) -> Result<Reply, JanusError> {
        let transaction = self.next_transaction();
        self.send_as(url, body, &transaction)
    }

    /// [`Client::send`] with the caller's `transaction`.
    fn send_as(&self, url: &str, mut body: Value, transaction: &str) -> Result<Reply, JanusError> {
        if let Some(map) = body.as_object_mut() {
            map.insert("transaction".into(), Value::from(transaction));
            if let Some(secret) = &self.api_secret {
                map.insert("apisecret".into(), Value::from(secret.expose()));
            }
            if let Some(token) = &self.token {
                map.insert("token".into(), Value::from(token.expose()));
            }
        }
        let reply = self.read(self.agent.post(url).send_json(&body))?;
        if reply.janus == "error" {
            return Err(core_error(reply));
        }
        if reply.transaction.as_deref() != Some(transaction) {
            return Err(JanusError::Protocol(format!(
                "reply for transaction {:?}, expected {transaction}",
                reply.transaction
            )));
        }
        Ok(reply)
    }

    fn read(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply, JanusError> {
        let value: Value = read_json(response, &self.url)?;
        serde_json::from_value(value).map_err(|e| JanusError::Protocol(e.to_string()))
    }

    fn append_auth_query(&self, url: &mut String) {
        for (name, value) in [("apisecret", &self.api_secret), ("token", &self.token)] {
            if let Some(value) = value {
                url.push('&');
                url.push_str(name);
                url.push('=');
                url.push_str(&percent_encode(value.expose()));
            }
        }
    }

    fn next_transaction(&self) -> String {
        let n = self.transactions.fetch_add(1, Ordering::Relaxed);
        format!("ba-{:08x}-{n}", self.transaction_prefix)
    }
}

/// Reads a JSON reply, bounded in size, mapping each failure to its kind.
fn read_json(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
) -> Result<Value, JanusError> {
    let transport = |source: ureq::Error| match tls_problem(&source) {
        Some((problem, clock)) => JanusError::Tls {
            url: url.to_owned(),
            problem,
            clock,
        },
        None => JanusError::Transport {
            url: url.to_owned(),
            source: Box::new(source),
        },
    };
    let mut response = response.map_err(transport)?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(JanusError::Http {
            url: url.to_owned(),
            status,
        });
    }
    // Read the bytes first (bounded), then parse: the size error stays a
    // size error instead of surfacing as a JSON syntax error.
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_REPLY_BYTES)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(n) => {
                JanusError::Protocol(format!("reply larger than {n} bytes"))
            }
            other => transport(other),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| JanusError::Protocol(e.to_string()))
}

/// A plugin's data, or its `error_code` as [`JanusError::Plugin`].
fn plugin_data(plugin: &'static str, data: Option<Value>) -> Result<Value, JanusError> {
    let data = data.ok_or_else(|| JanusError::Protocol(format!("{plugin} reply without data")))?;
    if let Some(code) = data.get("error_code").and_then(Value::as_u64) {
        return Err(JanusError::Plugin {
            plugin,
            code: u16::try_from(code).unwrap_or(u16::MAX),
            reason: data
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok(data)
}

/// Adds `key: secret` to a request body when the secret is set.
fn insert_secret(body: &mut Value, key: &str, secret: Option<&Secret>) {
    if let (Some(map), Some(secret)) = (body.as_object_mut(), secret) {
        map.insert(key.to_owned(), Value::from(secret.expose()));
    }
}

/// What viewers meet of a room the agent made: its description and PIN.
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    /// Shown to viewers (`room.description`).
    pub description: &'a str,
    /// Asked of viewers (`room.pin`); none: open to anyone with the link.
    pub pin: Option<&'a Secret>,
}

/// The `edit` that gives the room whose id is `id` (named `key`: `room`,
/// or `id` for a mountpoint) `listing`: an empty `new_pin` removes a PIN,
/// where the plugin can ([`rooms::RoomPlugin::CLEARS_PIN`]).
fn edit_request(key: &str, id: u64, secret: Option<&Secret>, listing: Listing<'_>) -> Value {
    let mut body = json!({
        "request": "edit",
        "new_description": listing.description,
        "new_pin": "",
    });
    body[key] = json!(id);
    insert_secret(&mut body, "secret", secret);
    insert_secret(&mut body, "new_pin", listing.pin);
    body
}

/// Reads a plugin's `create` reply: made now, or already there (`exists_code`).
fn created(
    result: Result<Value, JanusError>,
    exists_code: u16,
) -> Result<audiobridge::Created, JanusError> {
    match result {
        Ok(_) => Ok(audiobridge::Created::New),
        Err(e) if e.code() == Some(exists_code) => Ok(audiobridge::Created::Existing),
        Err(e) => Err(e),
    }
}

/// Reads the flag of a plugin's `exists` reply.
fn exists_flag(data: &Value) -> Result<bool, JanusError> {
    data.get("exists")
        .and_then(Value::as_bool)
        .ok_or_else(|| JanusError::Protocol(format!("exists reply without \"exists\": {data}")))
}

/// Treats plugin error `code` ("already gone") as success.
fn ignore_code(result: Result<Value, JanusError>, code: u16) -> Result<(), JanusError> {
    match result {
        Err(e) if e.code() == Some(code) => Ok(()),
        other => other.map(drop),
    }
}

fn core_error(reply: Reply) -> JanusError {
    match reply.error {
        Some(e) => JanusError::Core {
            code: e.code,
            reason: e.reason,
        },
        None => JanusError::Protocol(format!("{:?} reply without error details", reply.janus)),
    }
}

fn id_in(data: Value) -> Result<u64, JanusError> {
    data.get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| JanusError::Protocol(format!("no id in {data}")))
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved() {
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(percent_encode("a b&c=/"), "a%20b%26c%3D%2F");
    }

    #[test]
    fn secrets_are_only_added_when_set() {
        let mut body = json!({ "request": "destroy" });
        insert_secret(&mut body, "secret", None);
        assert!(body.get("secret").is_none());
        let secret = Secret::new("s");
        insert_secret(&mut body, "secret", secret.as_ref());
        assert_eq!(body["secret"], "s");
    }

    #[test]
    fn error_classes() {
        let gone = JanusError::Core {
            code: code::SESSION_NOT_FOUND,
            reason: String::new(),
        };
        assert!(gone.is_session_gone() && !gone.needs_operator());
        let denied = JanusError::Core {
            code: code::UNAUTHORIZED,
            reason: String::new(),
        };
        assert!(!denied.is_session_gone() && denied.needs_operator());
        assert_eq!(denied.code(), Some(403));
        assert!(denied
            .to_string()
            .contains("check janus.api_secret / janus.token"));
        let not_allowed = JanusError::Core {
            code: code::UNAUTHORIZED_PLUGIN,
            reason: String::new(),
        };
        assert!(not_allowed.needs_operator());
        let not_loaded = JanusError::Core {
            code: code::PLUGIN_NOT_FOUND,
            reason: String::new(),
        };
        assert!(not_loaded.needs_operator());
        assert!(not_loaded.to_string().contains("must load the AudioBridge"));
    }

    /// A reverse proxy answering for a restarting Janus, and a clock not set
    /// yet, are retried quickly; a proxy refusing access is not.
    #[test]
    fn proxy_gateway_errors_and_early_clocks_are_transient() {
        let http = |status| JanusError::Http {
            url: "https://janus.example/janus".into(),
            status,
        };
        for status in [502, 503, 504] {
            assert!(!http(status).needs_operator(), "HTTP {status}");
        }
        for status in [401, 403, 404, 500] {
            assert!(http(status).needs_operator(), "HTTP {status}");
        }
        let handshake = |e| {
            ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(e),
            ))
        };
        let early = tls_problem(&handshake(rustls::CertificateError::NotValidYet));
        assert!(matches!(early, Some((_, true))), "{early:?}");
        let (problem, clock) = early.unwrap_or_default();
        let error = JanusError::Tls {
            url: String::new(),
            problem,
            clock,
        };
        assert!(!error.needs_operator());
        let expired = tls_problem(&handshake(rustls::CertificateError::Expired));
        assert!(matches!(expired, Some((_, false))), "{expired:?}");
    }

    #[test]
    fn tls_problems_name_the_cause_and_the_setting() {
        let wrapped = |e: rustls::CertificateError| {
            ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(e),
            ))
        };
        let (problem, clock) =
            tls_problem(&wrapped(rustls::CertificateError::UnknownIssuer)).expect("a TLS problem");
        assert!(!clock);
        assert_eq!(
            problem,
            "certificate not trusted (UnknownIssuer); set janus.ca_file to the CA or certificate Janus serves"
        );
        let (problem, _) = tls_problem(&wrapped(rustls::CertificateError::NotValidForName))
            .expect("a TLS problem");
        assert!(problem.contains("(NotValidForName)") && problem.contains("janus.url"));
        let plain = ureq::Error::Io(std::io::Error::other("connection reset"));
        assert!(tls_problem(&plain).is_none());
    }
}
