//! The command line: `check` validates and masks, a bad config exits 78
//! with one line naming the key; every command's help has examples, and
//! the shell completions and manual pages made from it work.

mod common;

use std::fs;
use std::process::Command;

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

/// The commands `broadcast-agent --help` lists (without `help`).
fn commands() -> Vec<String> {
    let (status, out, err) = run_agent(&["--help"], &[]);
    assert!(status.success(), "{err}");
    let list = out
        .split("Commands:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no command list in\n{out}"));
    let names: Vec<String> = list
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 5, "{out}");
    names
}

/// Every command's `--help` (and the top's) ends with examples that use it.
#[test]
fn every_command_s_help_shows_an_example() {
    for command in commands() {
        let (status, out, err) = run_agent(&[&command, "--help"], &[]);
        assert!(status.success(), "{command}: {err}");
        let examples = out
            .split("\nExamples:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{command} --help has no examples:\n{out}"));
        assert!(
            examples.contains(&format!("broadcast-agent {command}")),
            "no example of {command}:\n{out}"
        );
    }
    let (_, out, _) = run_agent(&["--help"], &[]);
    assert!(out.contains("\nExamples:\n  "), "{out}");
    assert!(out.contains("\nExit status:\n"), "{out}");
}

/// Runs `script` in bash with `completions bash` sourced, as
/// bash-completion loads it; returns its output.
fn in_bash_with_completion(script: &str) -> String {
    let dir = scratch();
    let path = dir.path().join("broadcast-agent.bash");
    let (status, completion, err) = run_agent(&["completions", "bash"], &[]);
    assert!(status.success(), "{err}");
    fs::write(&path, completion).expect("write the completion script");
    let out = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(format!(
            "set -e; source {}; {script}",
            path.to_str().expect("utf-8")
        ))
        .output()
        .expect("run bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bash completes every command after `broadcast-agent `, and a command's
/// options after it (`status --` offers `--json`).
#[test]
fn bash_completes_every_command_and_their_options() {
    // What bash does on Tab: the function `complete -p` names, with the
    // words so far.
    let complete = r#"complete_words() {
        local f; f=$(complete -p broadcast-agent | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
        "$f" broadcast-agent "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        echo "${COMPREPLY[*]}"
    }"#;
    let out = in_bash_with_completion(&format!(
        "{complete}\ncomplete_words broadcast-agent ''\ncomplete_words broadcast-agent status --\n\
         complete_words broadcast-agent check --c"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let offered: Vec<&str> = lines[0].split(' ').collect();
    for command in commands() {
        assert!(
            offered.contains(&command.as_str()),
            "{command} not offered: {out}"
        );
    }
    assert_eq!(lines[1], "--config --socket --json --help", "{out}");
    assert_eq!(lines[2], "--config", "{out}");
}

/// zsh's and fish's scripts are for `broadcast-agent` and know every command.
#[test]
fn zsh_and_fish_completions_name_every_command() {
    for (shell, head) in [("zsh", "#compdef broadcast-agent\n"), ("fish", "")] {
        let (status, script, err) = run_agent(&["completions", shell], &[]);
        assert!(status.success(), "{shell}: {err}");
        assert!(script.starts_with(head), "{shell}:\n{script}");
        for command in commands() {
            let named = match shell {
                "zsh" => format!("'{command}:"),
                _ => format!("-a \"{command}\""),
            };
            assert!(script.contains(&named), "{shell}: {command} missing");
        }
    }
}

/// `man DIR` writes broadcast-agent.1 and a page per command, each of which
/// groff formats without a warning, with the command's examples.
#[test]
fn manual_pages_render_without_warnings() {
    let dir = scratch();
    let (status, out, err) = run_agent(&["man", dir.path().to_str().expect("utf-8")], &[]);
    assert!(status.success(), "{err}");
    let pages: Vec<String> = std::iter::once("broadcast-agent".to_owned())
        .chain(commands().iter().map(|c| format!("broadcast-agent-{c}")))
        .collect();
    assert_eq!(out.lines().count(), pages.len(), "{out}");
    for page in &pages {
        let path = dir.path().join(format!("{page}.1"));
        let rendered = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
            .arg(&path)
            .output()
            .expect("run groff (deploy/install-deps.sh installs groff-base)");
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(
            rendered.status.success() && warnings.is_empty(),
            "{page}: {warnings}"
        );
        let text = String::from_utf8_lossy(&rendered.stdout);
        let command = page.replacen("broadcast-agent-", "broadcast-agent ", 1);
        assert!(text.contains("EXAMPLES"), "{page}:\n{text}");
        assert!(text.contains(&command), "{page}:\n{text}");
    }
}
