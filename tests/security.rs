//! Secure by default, against a real Janus: verified HTTPS, API secret and
//! stored-token auth, the AudioBridge/Streaming admin key with
//! `lock_rtp_forward`, secrets read from files, and a config file that
//! holds secrets refused when others can read it.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::janus::{Janus, JanusConfig};
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
    let ca = format!("ca_file = \"{}\"", janus.certificate().display());
    goes_live_and_cleans_up(&janus, 7002, &config(&janus, 7002, &ca, ""));
}

#[test]
fn a_ca_certificate_served_by_janus_is_explained() {
    // What a bare `openssl req -x509` makes: CA:TRUE, refused as a server
    // certificate even when it is janus.ca_file.
    let janus = Janus::start_with(JanusConfig {
        https: true,
        https_cert_is_ca: true,
        ..JanusConfig::default()
    });
    let ca = format!("ca_file = \"{}\"", janus.certificate().display());
    let agent = Agent::start(&config(&janus, 7003, &ca, ""));
    let log = agent.wait_log(Duration::from_secs(5), "CaUsedAsEndEntity");
    assert!(log.contains("basicConstraints=critical,CA:FALSE"), "{log}");
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
