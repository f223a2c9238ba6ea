//! Secure by default, against a real Janus: verified HTTPS, API secret and
//! stored-token auth, the AudioBridge/Streaming admin key with
//! `lock_rtp_forward`, secrets read from files, and a config file that
//! holds secrets refused when others can read it.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::janus::{bare_certificate, Janus, JanusConfig};
use common::{
    assert_first_retry_is_slow, no_media_config, ports, run_agent, scratch, Agent, Extra,
};

const SECRET: &str = "security-room-secret";

/// An agent config for `janus` without media; `janus_extra` goes into
/// `[janus]`, `room_extra` into `[room]`.
fn config(janus: &Janus, room: u64, janus_extra: &str, room_extra: &str) -> String {
    config_speaker(janus, room, janus_extra, room_extra, ports(1))
}

/// [`config`] with Janus forwarding the room's audio to `speaker`.
fn config_speaker(
    janus: &Janus,
    room: u64,
    janus_extra: &str,
    room_extra: &str,
    speaker: u16,
) -> String {
    let janus_lines = format!("request_timeout_ms = 2000\n{janus_extra}");
    let extra = Extra {
        janus: &janus_lines,
        room: room_extra,
        ..Extra::default()
    };
    no_media_config(&janus.url(), room, SECRET, speaker, extra)
}

/// Starts an agent with `config` for `room`, waits until the room and its
/// mountpoint are on `janus`, then stops it: a clean exit leaves nothing.
fn goes_live_and_cleans_up(janus: &Janus, room: u64, config: &str) {
    let mut agent = Agent::start(config);
    let probe = janus.probe();
    probe.wait_room(room, SECRET, true);
    assert!(agent.stop(Duration::from_secs(10)).success());
    assert!(probe.nothing_left(room, SECRET));
}

#[test]
fn https_is_verified_and_ca_file_makes_it_work() {
    let janus = Janus::start_with(JanusConfig {
        https: true,
        ..JanusConfig::default()
    });
    assert!(janus.url().starts_with("https://127.0.0.1:"));

    // Without the CA: one clear line naming the problem and the fix, and
    // slow retries (a certificate problem is the operator's to fix).
    let mut agent = Agent::start(&config(&janus, 7001, "", ""));
    agent.wait_log(Duration::from_secs(5), "janus.ca_file");
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.is_running(), "the agent must keep retrying");
    let lines = agent.warnings("janus.ca_file");
    assert_eq!(lines.len(), 1, "{}", agent.log());
    println!("{}", lines[0]);
    assert!(
        lines[0].contains("certificate not trusted (UnknownIssuer)"),
        "{}",
        lines[0]
    );
    assert_first_retry_is_slow(&lines[0]);
    let status = agent.status_text();
    assert!(status.contains("certificate not trusted"), "{status}");
    assert!(!janus.probe().room_exists(7001));
    drop(agent);

    // With the certificate as janus.ca_file: the room appears.
    let ca = ca_file(&janus.certificate());
    goes_live_and_cleans_up(&janus, 7002, &config(&janus, 7002, &ca, ""));
}

/// `ca_file = "<path>"`, for `[janus]`.
fn ca_file(path: &Path) -> String {
    format!("ca_file = \"{}\"", path.display())
}

#[test]
fn a_bare_self_signed_certificate_is_pinned() {
    // What a bare `openssl req -x509` makes (CA:TRUE, no subjectAltName):
    // trusted when it is byte-for-byte janus.ca_file, as SSH trusts a key
    // in known_hosts.
    let janus = Janus::start_with(JanusConfig {
        https: true,
        https_cert_bare: true,
        ..JanusConfig::default()
    });

    // Another certificate made the same way (same subject) is no pin for
    // it: still refused, with the problem and its fix named.
    let dir = scratch();
    let other = bare_certificate(dir.path(), "other");
    let agent = Agent::start(&config(&janus, 7003, &ca_file(&other), ""));
    let log = agent.wait_log(Duration::from_secs(5), "certificate not trusted");
    let lines = agent.warnings("certificate not trusted");
    println!("{}", lines.join("\n"));
    assert!(
        log.contains("(CaUsedAsEndEntity)") || log.contains("(UnknownIssuer)"),
        "{log}"
    );
    assert!(log.contains("janus.ca_file"), "{log}");
    assert!(!janus.probe().room_exists(7003));
    drop(agent);

    // Exactly the certificate Janus serves: the room goes live.
    let pinned = config(&janus, 7004, &ca_file(&janus.certificate()), "");
    goes_live_and_cleans_up(&janus, 7004, &pinned);
}

#[test]
fn a_pinned_certificate_without_its_key_is_refused() {
    // Someone who copied the pinned certificate (it is public: Janus sends
    // it to everybody) but not Janus's key cannot pose as Janus.
    let dir = scratch();
    let pinned = bare_certificate(dir.path(), "janus");
    let wrong_key = bare_certificate(dir.path(), "other").with_extension("key");
    let url = impostor(&pinned, &wrong_key);
    let janus_lines = format!("request_timeout_ms = 2000\n{}", ca_file(&pinned));
    let extra = Extra {
        janus: &janus_lines,
        ..Extra::default()
    };
    let agent = Agent::start(&no_media_config(&url, 7005, SECRET, ports(1), extra));
    let log = agent.wait_log(Duration::from_secs(5), "TLS:");
    let lines = agent.warnings("TLS:");
    println!("{}", lines.join("\n"));
    assert!(
        log.contains("certificate not trusted (BadSignature)"),
        "{log}"
    );
}

/// A TLS server on loopback that presents `cert` but signs its handshakes
/// with `key`, another key: an impostor. Returns its https URL.
fn impostor(cert: &Path, key: &Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Present(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Present {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let der = PrivateKeyDer::from_pem_file(key).expect("impostor key");
    let signing_key = provider
        .key_provider
        .load_private_key(der)
        .expect("impostor signing key");
    let chain = vec![CertificateDer::from_pem_file(cert).expect("pinned certificate")];
    let presented = Present(Arc::new(rustls::sign::CertifiedKey::new(
        chain,
        signing_key,
    )));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(presented));
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("impostor port");
    let port = listener.local_addr().expect("impostor address").port();
    // Serves handshakes until the test process ends.
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            if let Ok(mut conn) = rustls::ServerConnection::new(config.clone()) {
                // The client aborts the handshake: the error is expected.
                let _ = conn.complete_io(&mut stream);
            }
        }
    });
    format!("https://127.0.0.1:{port}/janus")
}

/// Writes `secret` to `dir/name` as an operator would (`echo secret > file`).
fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("{secret}\n")).expect("write secret file");
    path
}

#[test]
fn api_secret_and_stored_token_from_files() {
    let janus = Janus::start_with(JanusConfig {
        api_secret: Some("api-right".into()),
        token_auth: true,
        ..JanusConfig::default()
    });
    janus.add_token("token-right");
    let dir = scratch();
    let api = secret_file(dir.path(), "api_secret", "api-right");
    let token = secret_file(dir.path(), "token", "token-right");
    let files = |token: &Path| {
        format!(
            "api_secret_file = \"{}\"\ntoken_file = \"{}\"",
            api.display(),
            token.display()
        )
    };

    goes_live_and_cleans_up(&janus, 7101, &config(&janus, 7101, &files(&token), ""));
}

#[test]
fn an_unknown_token_is_a_clear_403() {
    let janus = Janus::start_with(JanusConfig {
        token_auth: true,
        ..JanusConfig::default()
    });
    let dir = scratch();
    let wrong = secret_file(dir.path(), "token", "token-wrong");
    let token = format!("token_file = \"{}\"", wrong.display());
    // Slow retries, one warning naming the settings, and the status says why.
    let agent = Agent::start(&config(&janus, 7102, &token, ""));
    agent.wait_log(Duration::from_secs(5), "Janus error 403");
    std::thread::sleep(Duration::from_secs(3));
    let lines = agent.warnings("Janus error 403");
    assert_eq!(lines.len(), 1, "{}", agent.log());
    assert!(lines[0].contains("janus.token"), "{}", lines[0]);
    assert_first_retry_is_slow(&lines[0]);
    println!("{}", lines[0]);
    let status = agent.status_text();
    assert!(status.contains("last error: Janus error 403"), "{status}");
    assert!(!agent.log().contains("token-wrong"));
    assert!(!janus.probe().room_exists(7102));
}

#[test]
fn admin_key_unlocks_create_and_rtp_forward() {
    let janus = Janus::start_with(JanusConfig {
        admin_key: Some("admin-right".into()),
        ..JanusConfig::default()
    });
    let probe = janus.probe();

    // Without the key Janus refuses to create the room: said once, retried slowly.
    let agent = Agent::start(&config(&janus, 7201, "", ""));
    let log = agent.wait_log(Duration::from_secs(5), "admin_key");
    std::thread::sleep(Duration::from_secs(2));
    let lines = agent.warnings("admin_key");
    assert_eq!(lines.len(), 1, "{log}");
    println!("{}", lines[0]);
    assert!(lines[0].contains("set room.admin_key"), "{}", lines[0]);
    assert_first_retry_is_slow(&lines[0]);
    assert!(!probe.room_exists(7201));
    drop(agent);

    // With it (from a file): room, mountpoint and the locked forwarder.
    let dir = scratch();
    let key = secret_file(dir.path(), "admin_key", "admin-right");
    let speaker = ports(1);
    let room_extra = format!("admin_key_file = \"{}\"", key.display());
    let mut agent = Agent::start(&config_speaker(&janus, 7202, "", &room_extra, speaker));
    probe.wait_all_present(7202, SECRET, speaker, Duration::from_secs(5));
    assert!(!agent.log().contains("admin-right"));
    assert!(agent.stop(Duration::from_secs(10)).success());
    assert!(probe.nothing_left(7202, SECRET));
}

#[test]
fn a_world_readable_config_with_secrets_is_refused() {
    let dir = scratch();
    let path = dir.path().join("agent.toml");
    fs::write(&path, "[room]\nsecret = \"hunter2\"\n").expect("write config");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let shown = path.display().to_string();
    for command in ["run", "check"] {
        let (status, _, err) = run_agent(&[command, "--config", &shown], &[]);
        assert_eq!(status.code(), Some(78), "{command}: {err}");
        let lines: Vec<_> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        for needle in [shown.as_str(), "room.secret", "mode 0644", "chmod 640"] {
            assert!(lines[0].contains(needle), "{needle} not in {}", lines[0]);
        }
        assert!(!err.contains("hunter2"));
    }
    // Group-readable, or secrets kept in a file: accepted.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
    let (status, _, err) = run_agent(&["check", "--config", &shown], &[]);
    assert!(status.success(), "{err}");
    let key = secret_file(dir.path(), "secret", "hunter2");
    fs::write(
        &path,
        format!("[room]\nsecret_file = \"{}\"\n", key.display()),
    )
    .expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let (status, out, err) = run_agent(&["check", "--config", &shown], &[]);
    assert!(status.success(), "{err}");
    assert!(!out.contains("hunter2"), "{out}");
}

/// Creates, as a viewer of the page could (no admin key), a room with `id`
/// in each plugin the agent uses; the plugins' replies.
fn squat_everything(probe: &common::janus::Probe, id: u64) -> Vec<serde_json::Value> {
    use serde_json::json;
    let theirs = "a-viewers-secret";
    vec![
        probe.textroom(json!({ "request": "create", "room": id, "secret": theirs })),
        probe.audiobridge(json!({ "request": "create", "room": id, "secret": theirs })),
        probe.streaming(json!({
            "request": "create", "type": "rtp", "id": id, "secret": theirs,
            "media": [{ "type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus" }]
        })),
        probe.videoroom(json!({ "request": "create", "room": id, "secret": theirs })),
    ]
}

/// The shipped conf/janus locks every plugin the agent uses with an admin
/// key: a viewer's create is refused, the agent's (with the key) is not.
#[test]
fn on_the_shipped_janus_a_viewer_cannot_take_the_broadcasts_id() {
    let janus = Janus::start_with(JanusConfig {
        admin_key: Some("shipped-fresh-key".into()),
        ..JanusConfig::default()
    });
    let probe = janus.probe();
    for refused in squat_everything(&probe, 7301) {
        let error = refused["error"].as_str().unwrap_or_default();
        assert!(error.contains("admin_key"), "not refused: {refused}");
    }
    let dir = scratch();
    let key = secret_file(dir.path(), "admin_key", "shipped-fresh-key");
    let room_extra = format!("admin_key_file = \"{}\"", key.display());
    let speaker = ports(1);
    let mut agent = Agent::start(&config_speaker(&janus, 7301, "", &room_extra, speaker));
    probe.wait_all_present(7301, SECRET, speaker, Duration::from_secs(5));
    common::wait_for(Duration::from_secs(5), "the chat", || {
        probe.chat_exists(7301).then_some(())
    });
    assert_eq!(agent.status_json()["phase"], "live");
    assert!(agent.warnings("anybody").is_empty(), "{}", agent.log());
    assert!(agent.stop(Duration::from_secs(10)).success());
}

/// On a Janus that lets anybody create rooms, a viewer who made the chat
/// with the broadcast's id while it was closed gets nothing: the agent
/// opens no part of the room (`conflict`), sends nothing, and says once
/// what lets it happen and how to fix it.
#[test]
fn a_squatted_chat_opens_nothing_and_an_open_janus_is_named_once() {
    let janus = Janus::start();
    let probe = janus.probe();
    let squat = probe.textroom(serde_json::json!({
        "request": "create", "room": 7302, "secret": "a-viewers-secret"
    }));
    assert_eq!(squat["textroom"], "created", "{squat}");
    let agent = Agent::start(&config(&janus, 7302, "", "admin_key = \"unused-key\""));
    agent.wait_log(
        Duration::from_secs(5),
        "chat room 7302 on Janus is not this agent's",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.status_json()["phase"], "conflict");
    assert!(
        !probe.room_exists(7302),
        "the room was opened beside a stranger's chat"
    );
    assert!(probe.mountpoint(7302, SECRET).is_none());
    drop(agent);

    // The agent's own create shows the plugins open: said once, with the fix.
    let agent = Agent::start(&config(&janus, 7303, "", "admin_key = \"unused-key\""));
    probe.wait_room(7303, SECRET, true);
    std::thread::sleep(Duration::from_secs(1));
    let warnings = agent.warnings("Janus lets anybody create rooms");
    assert_eq!(warnings.len(), 1, "{}", agent.log());
    assert!(
        warnings[0].contains("deploy/janus-conf.sh"),
        "{}",
        warnings[0]
    );
}
