//! A real Janus (Debian package `janus`) on loopback, and a probe that asks it
//! what exists through its own REST and Admin APIs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{ports, repo, scratch, wait_for};

/// Admin secret of the shipped `conf/janus/janus.jcfg`.
const ADMIN_SECRET: &str = "janusoverlord";

/// Options for a test Janus, on top of the shipped configuration.
#[derive(Debug, Default, Clone)]
pub struct JanusConfig {
    /// Require this `api_secret` on every request.
    pub api_secret: Option<String>,
    /// Require a stored token (`token_auth = true`); add tokens with
    /// [`Janus::add_token`]. The probe gets one of its own.
    pub token_auth: bool,
    /// The plugins' `admin_key` (with `lock_rtp_forward = true`), in place of
    /// the shipped placeholder; without one, Janus lets anybody create rooms.
    pub admin_key: Option<String>,
    /// Serve the REST API over HTTPS too, with a certificate made for this
    /// instance (CN=localhost, SAN IP:127.0.0.1); [`Janus::url`] is then https.
    pub https: bool,
    /// Make that certificate with [`bare_certificate`] instead: a CA
    /// certificate without subjectAltName, as people make them.
    pub https_cert_bare: bool,
    /// Do not load the TextRoom plugin (as a Janus set up before the chat).
    pub without_textroom: bool,
    /// Do not load the VideoRoom plugin (as a Janus set up before the
    /// WebRTC uplink).
    pub without_videoroom: bool,
}

/// Makes a self-signed certificate (`name.pem`) and its key (`name.key`)
/// in `dir` with the command the original project's instructions and
/// Janus's docs give, without options: `openssl req -x509 -newkey rsa:2048
/// -nodes -keyout k -out c -subj /CN=localhost -days 2`. OpenSSL marks it
/// a CA (basicConstraints CA:TRUE) and gives it no subjectAltName.
pub fn bare_certificate(dir: &Path, name: &str) -> PathBuf {
    let cert = dir.join(format!("{name}.pem"));
    openssl_req(&[], &dir.join(format!("{name}.key")), &cert);
    cert
}

/// Runs `openssl req -x509` for CN=localhost, valid 2 days, with `extra`.
fn openssl_req(extra: &[&str], key: &Path, cert: &Path) {
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=localhost", "-days", "2"])
        .args(extra)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl (apt-get install openssl)");
    assert!(status.success(), "openssl req failed");
}

/// The token the probe uses against a Janus with `token_auth`.
const PROBE_TOKEN: &str = "probe-token";

/// A Janus server running the project's `conf/janus` on its own loopback ports.
pub struct Janus {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// REST port.
    pub port: u16,
    /// Admin API port.
    pub admin_port: u16,
    /// HTTPS REST port (used when `https` is set).
    pub secure_port: u16,
    config: JanusConfig,
}

impl Janus {
    /// Starts Janus with the shipped configuration.
    pub fn start() -> Self {
        Self::start_with(JanusConfig::default())
    }

    /// Starts Janus with the shipped configuration plus `config`.
    pub fn start_with(config: JanusConfig) -> Self {
        // Another process (a concurrent test run) may hold a block: skip it.
        let base = (0..10)
            .map(|_| ports(60))
            .find(|base| {
                (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
            })
            .expect("a free block of ports for Janus");
        let dir = scratch();
        let mut janus = Self {
            child: None,
            dir,
            port: base,
            admin_port: base + 1,
            secure_port: base + 2,
            config,
        };
        if janus.config.https {
            janus.make_certificate();
        }
        janus.write_config(base);
        janus.launch();
        if janus.config.token_auth {
            janus.add_token(PROBE_TOKEN);
        }
        janus
    }

    /// The REST endpoint, as the agent's `janus.url` takes it: https when
    /// the instance serves HTTPS.
    pub fn url(&self) -> String {
        if self.config.https {
            format!("https://127.0.0.1:{}/janus", self.secure_port)
        } else {
            self.http_url()
        }
    }

    /// The plain-http REST endpoint (always served, for the probe).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/janus", self.port)
    }

    /// The self-signed certificate Janus serves HTTPS with (PEM), to give
    /// the agent as `janus.ca_file`.
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn make_certificate(&self) {
        let key = self.dir.path().join("cert.key");
        let cert = self.certificate();
        if self.config.https_cert_bare {
            return openssl_req(&[], &key, &cert);
        }
        let extensions = [
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ];
        openssl_req(&extensions, &key, &cert);
    }

    /// Adds a stored token (Admin API `add_token`, all plugins allowed).
    pub fn add_token(&self, token: &str) {
        let reply = self.admin(json!({ "janus": "add_token", "token": token }));
        assert_eq!(reply["janus"], "success", "add_token: {reply}");
    }

    fn admin(&self, mut body: Value) -> Value {
        let url = format!("http://127.0.0.1:{}/admin", self.admin_port);
        body["transaction"] = json!("t");
        body["admin_secret"] = json!(ADMIN_SECRET);
        post(&url, body)
    }

    /// Copies `conf/janus` with this instance's ports and options.
    fn write_config(&self, base: u16) {
        let source = repo().join("conf/janus");
        let rewrite = |file: &str, edits: &[(&str, String)]| {
            let mut text = fs::read_to_string(source.join(file)).expect("shipped Janus config");
            for (from, to) in edits {
                assert!(text.contains(from), "{file} no longer contains {from:?}");
                text = text.replacen(from, to, 1);
            }
            fs::write(self.dir.path().join(file), text).expect("write Janus config");
        };
        let mut core = vec![(
            "rtp_port_range = \"20000-40000\"",
            format!("rtp_port_range = \"{}-{}\"", base + 10, base + 29),
        )];
        if let Some(secret) = &self.config.api_secret {
            core.push((
                "#api_secret = \"change-me\"",
                format!("api_secret = \"{secret}\""),
            ));
        }
        if self.config.token_auth {
            core.push(("#token_auth = true", "token_auth = true".into()));
        }
        if self.config.without_textroom {
            core.push(("disable = \"", "disable = \"libjanus_textroom.so,".into()));
        }
        if self.config.without_videoroom {
            core.push(("disable = \"", "disable = \"libjanus_videoroom.so,".into()));
        }
        rewrite("janus.jcfg", &core);
        let mut http = vec![
            ("port = 8088", format!("port = {}", self.port)),
            (
                "admin_port = 7088",
                format!("admin_port = {}", self.admin_port),
            ),
        ];
        if self.config.https {
            let dir = self.dir.path().display();
            http.extend([
                ("https = false", "https = true".into()),
                (
                    "#secure_port = 8089",
                    format!("secure_port = {}", self.secure_port),
                ),
                (
                    "#secure_ip = \"0.0.0.0\"",
                    "secure_ip = \"127.0.0.1\"".into(),
                ),
                (
                    "#cert_pem = \"/etc/janus/certs/mycert.pem\"",
                    format!("cert_pem = \"{dir}/cert.pem\""),
                ),
                (
                    "#cert_key = \"/etc/janus/certs/mycert.key\"",
                    format!("cert_key = \"{dir}/cert.key\""),
                ),
            ]);
        }
        rewrite("janus.transport.http.jcfg", &http);
        let bridge = [(
            "rtp_port_range = \"10000-10100\"",
            format!("rtp_port_range = \"{}-{}\"", base + 30, base + 49),
        )];
        rewrite("janus.plugin.audiobridge.jcfg", &self.keyed(&bridge, true));
        rewrite("janus.plugin.streaming.jcfg", &self.keyed(&[], false));
        rewrite("janus.plugin.textroom.jcfg", &self.keyed(&[], false));
        rewrite("janus.plugin.videoroom.jcfg", &self.keyed(&[], true));
    }

    /// `edits` and the plugin's admin key: [`JanusConfig::admin_key`] for
    /// the shipped placeholder, or without one, the key and its lock
    /// commented out (an open Janus, as Debian ships it); `locks`: the
    /// plugin forwards, and locks its forwarders with the key.
    fn keyed(&self, edits: &[(&'static str, String)], locks: bool) -> Vec<(&'static str, String)> {
        let mut edits = edits.to_vec();
        match &self.config.admin_key {
            Some(key) => edits.push(("@ADMIN_KEY@", key.clone())),
            None => {
                edits.push(("admin_key = \"@ADMIN_KEY@\"", "#admin_key = \"\"".into()));
                if locks {
                    edits.push(("lock_rtp_forward = true", "#lock_rtp_forward = true".into()));
                }
            }
        }
        edits
    }

    fn launch(&mut self) {
        let log = fs::File::create(self.log_path()).expect("Janus log file");
        let child = Command::new("janus")
            .arg("-F")
            .arg(self.dir.path())
            .arg("-o")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start janus (apt-get install janus)");
        self.child = Some(child);
        let probe_url = format!("http://127.0.0.1:{}/janus/info", self.port);
        wait_for(Duration::from_secs(10), "Janus to answer", || {
            ureq::get(&probe_url).call().ok().map(drop)
        });
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("janus.log")
    }

    /// Kills Janus hard (as a crash or power loss would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Janus again on the same ports; returns when it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A probe for this server (over plain http, with whatever credentials
    /// this Janus requires).
    pub fn probe(&self) -> Probe {
        let token = self.config.token_auth.then(|| PROBE_TOKEN.to_owned());
        Probe::new(&self.http_url(), self.config.api_secret.clone(), token)
    }

    /// The Janus log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Session ids Janus holds (Admin API `list_sessions`).
    pub fn sessions(&self) -> Vec<u64> {
        let reply = self.admin(json!({ "janus": "list_sessions" }));
        reply["sessions"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = fs::read_to_string(self.log_path()).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(40).collect();
            eprintln!("--- Janus log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn post(url: &str, body: Value) -> Value {
    ureq::post(url)
        .send_json(&body)
        .and_then(|mut r| r.body_mut().read_json())
        .unwrap_or(Value::Null)
}

/// A client of its own that asks Janus what exists, as a viewer would.
pub struct Probe {
    url: String,
    api_secret: Option<String>,
    token: Option<String>,
    session: u64,
    audiobridge: u64,
    streaming: u64,
    textroom: u64,
    videoroom: u64,
}

impl Probe {
    fn new(url: &str, api_secret: Option<String>, token: Option<String>) -> Self {
        let mut probe = Self {
            url: url.to_owned(),
            api_secret,
            token,
            session: 0,
            audiobridge: 0,
            streaming: 0,
            textroom: 0,
            videoroom: 0,
        };
        probe.connect();
        probe
    }

    /// (Re)creates the probe's session, e.g. after a Janus restart.
    pub fn connect(&mut self) {
        let created = self.core(&self.url.clone(), json!({ "janus": "create" }));
        self.session = created["data"]["id"].as_u64().expect("probe session");
        let session_url = format!("{}/{}", self.url, self.session);
        let attach = |plugin: &str| {
            let attached = self.core(&session_url, json!({ "janus": "attach", "plugin": plugin }));
            attached["data"]["id"].as_u64()
        };
        let (audiobridge, streaming, textroom, videoroom) = (
            attach("janus.plugin.audiobridge").expect("probe handle"),
            attach("janus.plugin.streaming").expect("probe handle"),
            // None on a Janus started `without_textroom`: TextRoom requests fail.
            attach("janus.plugin.textroom").unwrap_or(0),
            // Likewise `without_videoroom`.
            attach("janus.plugin.videoroom").unwrap_or(0),
        );
        self.audiobridge = audiobridge;
        self.streaming = streaming;
        self.textroom = textroom;
        self.videoroom = videoroom;
    }

    /// The probe's own session id (to tell it apart in `list_sessions`).
    pub fn session(&self) -> u64 {
        self.session
    }

    fn core(&self, url: &str, mut body: Value) -> Value {
        body["transaction"] = json!("probe");
        if let Some(secret) = &self.api_secret {
            body["apisecret"] = json!(secret);
        }
        if let Some(token) = &self.token {
            body["token"] = json!(token);
        }
        post(url, body)
    }

    /// Sends an AudioBridge request; returns the plugin data.
    pub fn audiobridge(&self, body: Value) -> Value {
        self.message(self.audiobridge, body)
    }

    /// Sends a Streaming request; returns the plugin data.
    pub fn streaming(&self, body: Value) -> Value {
        self.message(self.streaming, body)
    }

    /// Sends a TextRoom request (over the Janus API); returns the plugin data.
    pub fn textroom(&self, body: Value) -> Value {
        self.message(self.textroom, body)
    }

    /// Sends a VideoRoom request; returns the plugin data.
    pub fn videoroom(&self, body: Value) -> Value {
        self.message(self.videoroom, body)
    }

    /// Whether the VideoRoom room (the WebRTC uplink's) exists.
    pub fn video_room_exists(&self, room: u64) -> bool {
        self.videoroom(json!({ "request": "exists", "room": room }))["exists"] == true
    }

    /// The ids of the VideoRoom room's publishers whose media is up.
    pub fn publishers(&self, room: u64) -> Vec<u64> {
        let list = self.videoroom(json!({ "request": "listparticipants", "room": room }));
        list["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["publisher"] == true)
            .filter_map(|p| p["id"].as_u64())
            .collect()
    }

    /// The forwarders of the VideoRoom room, as (publisher, type, port).
    pub fn uplink_forwarders(&self, room: u64, secret: &str) -> Vec<(u64, String, u64)> {
        let list = self.videoroom(json!({
            "request": "listforwarders", "room": room, "secret": secret
        }));
        let mut found = Vec::new();
        for publisher in list["publishers"].as_array().into_iter().flatten() {
            let id = publisher["publisher_id"].as_u64().unwrap_or_default();
            for f in publisher["forwarders"].as_array().into_iter().flatten() {
                let kind = f["type"].as_str().unwrap_or_default().to_owned();
                found.push((id, kind, f["port"].as_u64().unwrap_or_default()));
            }
        }
        found
    }

    /// Whether the TextRoom room (the chat) exists.
    pub fn chat_exists(&self, room: u64) -> bool {
        self.textroom(json!({ "request": "exists", "room": room }))["exists"] == true
    }

    fn message(&self, handle: u64, body: Value) -> Value {
        let url = format!("{}/{}/{}", self.url, self.session, handle);
        let reply = self.core(&url, json!({ "janus": "message", "body": body }));
        reply["plugindata"]["data"].clone()
    }

    /// Whether the AudioBridge room exists.
    pub fn room_exists(&self, room: u64) -> bool {
        self.audiobridge(json!({ "request": "exists", "room": room }))["exists"] == true
    }

    /// The room as AudioBridge `list` shows it (a public room), if it exists.
    pub fn room(&self, room: u64) -> Option<Value> {
        let data = self.audiobridge(json!({ "request": "list" }));
        data["list"]
            .as_array()?
            .iter()
            .find(|r| r["room"] == room)
            .cloned()
    }

    /// The mountpoint's info, if it exists.
    pub fn mountpoint(&self, id: u64, secret: &str) -> Option<Value> {
        let data = self.streaming(json!({ "request": "info", "id": id, "secret": secret }));
        (data["streaming"] == "info").then(|| data["info"].clone())
    }

    /// The room's forwarders (empty when the room is gone).
    pub fn forwarders(&self, room: u64, secret: &str) -> Vec<Value> {
        let data = self
            .audiobridge(json!({ "request": "listforwarders", "room": room, "secret": secret }));
        data["rtp_forwarders"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Room, mountpoint and a forwarder to `speaker_port` all exist.
    pub fn all_present(&self, room: u64, secret: &str, speaker_port: u16) -> bool {
        self.room_exists(room)
            && self.mountpoint(room, secret).is_some()
            && self
                .forwarders(room, secret)
                .iter()
                .any(|f| f["port"] == speaker_port)
    }

    /// Waits (up to 5 s) until room and mountpoint both exist (`present`),
    /// or neither does.
    pub fn wait_room(&self, room: u64, secret: &str, present: bool) {
        wait_for(
            Duration::from_secs(5),
            &format!("room {room} and its mountpoint present = {present}"),
            || {
                (self.room_exists(room) == present
                    && self.mountpoint(room, secret).is_some() == present)
                    .then_some(())
            },
        );
    }

    /// Waits (up to `timeout`) until room, mountpoint and a forwarder to
    /// `speaker_port` all exist.
    pub fn wait_all_present(&self, room: u64, secret: &str, speaker_port: u16, timeout: Duration) {
        wait_for(
            timeout,
            &format!("room {room}, its mountpoint and a forwarder to {speaker_port}"),
            || self.all_present(room, secret, speaker_port).then_some(()),
        );
    }

    /// Milliseconds since Janus last received `kind` on the mountpoint.
    pub fn media_age(&self, id: u64, secret: &str, kind: &str) -> Option<u64> {
        let info = self.mountpoint(id, secret)?;
        info["media"]
            .as_array()?
            .iter()
            .find(|m| m["type"] == kind)?["age_ms"]
            .as_u64()
    }

    /// Joins the AudioBridge room as a plain-RTP participant sending Opus
    /// from `local_port`; returns the port Janus receives on.
    pub fn join_rtp(&self, room: u64, local_port: u16) -> u16 {
        let joined = self.join(room, None, local_port);
        joined["rtp"]["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("not joined: {joined}"))
    }

    /// Joins as [`Self::join_rtp`] does, with `pin`; returns what Janus
    /// answered: `joined`, or the error (a wrong PIN).
    pub fn join(&self, room: u64, pin: Option<&str>, local_port: u16) -> Value {
        let mut body = json!({
            "request": "join", "room": room, "display": "rtp-test",
            "rtp": { "ip": "127.0.0.1", "port": local_port, "payload_type": 111 }
        });
        if let Some(pin) = pin {
            body["pin"] = json!(pin);
        }
        let ack = self.audiobridge(body);
        // `join` is asynchronous: the reply is an ack, the result an event.
        assert!(ack.is_null(), "join was answered synchronously: {ack}");
        let mut url = format!("{}/{}?maxev=1", self.url, self.session);
        for (name, value) in [("apisecret", &self.api_secret), ("token", &self.token)] {
            if let Some(value) = value {
                url.push_str(&format!("&{name}={value}"));
            }
        }
        wait_for(Duration::from_secs(5), "the join's event", || {
            let event: Value = ureq::get(&url).call().ok()?.body_mut().read_json().ok()?;
            let data = &event["plugindata"]["data"];
            (data["audiobridge"] == "joined" || data.get("error_code").is_some())
                .then(|| data.clone())
        })
    }

    /// Neither room nor mountpoint exists.
    pub fn nothing_left(&self, room: u64, secret: &str) -> bool {
        !self.room_exists(room) && self.mountpoint(room, secret).is_none()
    }
}
