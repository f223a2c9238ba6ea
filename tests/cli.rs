//! The command line: `check` validates and masks, a bad config exits 78
//! with one line naming the key.

mod common;

use common::{run_agent, scratch, write_private};

const EX_CONFIG: i32 = 78;

/// Runs `check` on a file with `content`; returns exit code, stdout, stderr.
fn check(content: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = scratch();
    let path = dir.path().join("agent.toml");
    write_private(&path, content);
    let path = path.to_str().expect("utf-8 path");
    let (status, out, err) = run_agent(&["check", "--config", path], env);
    (status.code().unwrap_or(-1), out, err)
}

fn assert_rejected(content: &str, env: &[(&str, &str)], key: &str) {
    let (code, _, err) = check(content, env);
    assert_eq!(code, EX_CONFIG, "stderr: {err}");
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not {lines:?}");
    assert!(lines[0].contains(key), "{key} not named in {:?}", lines[0]);
}

#[test]
fn bad_configs_exit_78_naming_the_key() {
    assert_rejected("[room]\nidd = 1\n", &[], "room.idd: unknown key");
    assert_rejected("[rooom]\nid = 1\n", &[], "rooom: unknown section");
    assert_rejected("[room]\nid = \"one\"\n", &[], "room.id: invalid type");
    assert_rejected("[room]\nid = 0\n", &[], "room.id: must not be 0");
    assert_rejected("[stream]\nvideo_port = 70000\n", &[], "stream.video_port");
    assert_rejected("[speaker]\nport = 0\n", &[], "speaker.port");
    assert_rejected("[janus]\nurl = \"janus:8088\"\n", &[], "janus.url");
    assert_rejected(
        "[janus]\nca_file = \"/nonexistent.pem\"\n",
        &[],
        "janus.ca_file",
    );
    assert_rejected("[room\n", &[], "TOML parse error at line 1");
    assert_rejected("", &[("BROADCAST_AGENT__ROOM__ID", "0")], "room.id");
    assert_rejected(
        "",
        &[("BROADCAST_AGENT__JANUS__URLL", "x")],
        "janus.urll: unknown key",
    );
}

#[test]
fn missing_file_exits_78() {
    let (status, _, err) = run_agent(&["check", "--config", "/nonexistent/agent.toml"], &[]);
    assert_eq!(status.code(), Some(EX_CONFIG));
    assert!(
        err.contains("/nonexistent/agent.toml: No such file"),
        "{err}"
    );
}

#[test]
fn run_with_a_bad_config_exits_78_too() {
    let dir = scratch();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[room]\nid = 0\n").expect("write config");
    let (status, _, err) = run_agent(&["run", "--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(status.code(), Some(EX_CONFIG), "{err}");
}

#[test]
fn check_prints_effective_settings_with_secrets_masked() {
    let (code, out, err) = check(
        "[janus]\napi_secret = \"api-s3cret\"\n[room]\nid = 12\nsecret = \"room-s3cret\"\npin = \"9876\"\n",
        &[("BROADCAST_AGENT__JANUS__TOKEN", "tok-s3cret")],
    );
    assert_eq!(code, 0, "{err}");
    for secret in ["api-s3cret", "room-s3cret", "9876", "tok-s3cret"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} shown:\n{out}"
        );
    }
    assert!(out.contains("id = 12"), "{out}");
    assert!(out.contains("token = \"***\""), "{out}");
    assert!(out.contains("api_secret = \"***\""), "{out}");
}

#[test]
fn check_prints_a_long_setting_in_full() {
    // More output than a pipe holds (64 KiB): read while the agent writes
    // it, or the agent blocks and never exits.
    let description = "x".repeat(100 * 1024);
    let (code, out, err) = check(&format!("[room]\ndescription = \"{description}\"\n"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("description = \"{description}\"")),
        "{} bytes of output",
        out.len()
    );
}

#[test]
fn shipped_config_checks() {
    let path = common::repo().join("conf/agent.toml");
    let (status, out, err) = run_agent(&["check", "--config", path.to_str().expect("utf-8")], &[]);
    assert!(status.success(), "{err}");
    assert!(out.contains("valid"));
}

/// docs/security.md's advice, `token_file = "%d/janus_token"` (systemd
/// credentials), passes `check` outside the service, where
/// `$CREDENTIALS_DIRECTORY` is unset (as `deploy.sh` runs it), and says the
/// service reads it; `run` without the directory still refuses it.
#[test]
fn check_accepts_secrets_in_systemd_credentials() {
    let toml = "[janus]\ntoken_file = \"%d/janus_token\"\n";
    let (code, out, err) = check(toml, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("# janus.token_file: in systemd's credentials directory, read by the service"),
        "{out}"
    );
    let dir = scratch();
    let path = dir.path().join("agent.toml");
    write_private(&path, toml);
    let (status, _, err) = run_agent(&["run", "--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("$CREDENTIALS_DIRECTORY is not set"), "{err}");
}
