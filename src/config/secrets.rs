//! Secrets kept out of the file: the `*_file` keys read at load time
//! (systemd credentials included), and the refusal of a world-readable file
//! that holds secrets inline.

use std::path::{Path, PathBuf};

use super::{ConfigError, Purpose, Settings};
use crate::secret::Secret;

/// The secrets that may be written inline or read from a `<key>_file`.
const SECRET_KEYS: [(&str, &str); 5] = [
    ("janus", "api_secret"),
    ("janus", "token"),
    ("room", "secret"),
    ("room", "pin"),
    ("room", "admin_key"),
];

/// The secrets of each `[[relay]]` that may be written inline.
const RELAY_SECRET_KEYS: [&str; 3] = ["api_secret", "token", "admin_key"];

/// What `*_file` paths may start with to name systemd's credentials
/// directory (`LoadCredential=`), which the agent finds in this variable.
pub(super) const CREDENTIALS_VARIABLE: &str = "CREDENTIALS_DIRECTORY";

impl Settings {
    /// Reads each secret given as a `*_file` key into its setting. The file
    /// holds the secret alone; trailing line breaks are dropped. A path may
    /// start with `%d/` or `$CREDENTIALS_DIRECTORY/` for systemd's
    /// credentials directory (`LoadCredential=`); to [`Purpose::Check`]
    /// outside the service, such a file is listed in `deferred_secrets`.
    pub(super) fn read_secret_files(
        &mut self,
        credentials: Option<&Path>,
        purpose: Purpose,
    ) -> Result<(), (&'static str, String)> {
        let mut deferred = Vec::new();
        for slot in self.secret_slots() {
            if let Some(file_key) = read_slot(slot, credentials, purpose)? {
                deferred.push(file_key);
            }
        }
        self.deferred_secrets = deferred;
        Ok(())
    }

    /// Every secret that may come from a file, `[[relay]]`'s included.
    fn secret_slots(&mut self) -> Vec<Slot<'_>> {
        let (janus, room) = (&mut self.janus, &mut self.room);
        let mut slots: Vec<Slot<'_>> = vec![
            (
                "janus.api_secret",
                "janus.api_secret_file",
                &mut janus.api_secret,
                &janus.api_secret_file,
            ),
            (
                "janus.token",
                "janus.token_file",
                &mut janus.token,
                &janus.token_file,
            ),
            (
                "room.secret",
                "room.secret_file",
                &mut room.secret,
                &room.secret_file,
            ),
            ("room.pin", "room.pin_file", &mut room.pin, &room.pin_file),
            (
                "room.admin_key",
                "room.admin_key_file",
                &mut room.admin_key,
                &room.admin_key_file,
            ),
        ];
        for relay in &mut self.relays {
            slots.extend([
                (
                    "relay.api_secret",
                    "relay.api_secret_file",
                    &mut relay.api_secret,
                    &relay.api_secret_file,
                ),
                (
                    "relay.token",
                    "relay.token_file",
                    &mut relay.token,
                    &relay.token_file,
                ),
                (
                    "relay.admin_key",
                    "relay.admin_key_file",
                    &mut relay.admin_key,
                    &relay.admin_key_file,
                ),
            ] as [Slot<'_>; 3]);
        }
        slots
    }
}

/// Reads one slot's file into its setting; the file's key when it is left
/// for the service (systemd's credentials, to [`Purpose::Check`]).
fn read_slot(
    (key, file_key, value, file): Slot<'_>,
    credentials: Option<&Path>,
    purpose: Purpose,
) -> Result<Option<&'static str>, (&'static str, String)> {
    let Some(file) = file else { return Ok(None) };
    if value.is_some() {
        return Err((
            file_key,
            format!("set either {key} or {file_key}, not both"),
        ));
    }
    let path = match credential_path(file, credentials) {
        Credential::Path(path) => path,
        Credential::Unset if purpose == Purpose::Check => return Ok(Some(file_key)),
        Credential::Unset => {
            return Err((
                file_key,
                format!(
                "{} names systemd's credentials directory, but ${CREDENTIALS_VARIABLE} is not set \
                     (add LoadCredential= to the unit)",
                file.display()
            ),
            ))
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| (file_key, format!("cannot read {}: {e}", path.display())))?;
    let secret = Secret::new(text.trim_end_matches(['\n', '\r']))
        .ok_or_else(|| (file_key, format!("{} is empty", path.display())))?;
    *value = Some(secret);
    Ok(None)
}

/// A secret that may come from a file: its key, the file's key, the
/// setting, and the file.
type Slot<'a> = (
    &'static str,
    &'static str,
    &'a mut Option<Secret>,
    &'a Option<PathBuf>,
);

/// Where a `*_file` path leads.
enum Credential {
    /// To this file.
    Path(PathBuf),
    /// Into systemd's credentials directory, which is not set here.
    Unset,
}

/// `path` with a leading `%d/` or `$CREDENTIALS_DIRECTORY/` replaced by
/// systemd's credentials directory.
fn credential_path(path: &Path, credentials: Option<&Path>) -> Credential {
    let text = path.to_string_lossy();
    let rest = text
        .strip_prefix("%d/")
        .or_else(|| text.strip_prefix("$CREDENTIALS_DIRECTORY/"));
    match (rest, credentials) {
        (None, _) => Credential::Path(path.to_owned()),
        (Some(name), Some(dir)) => Credential::Path(dir.join(name)),
        (Some(_), None) => Credential::Unset,
    }
}

/// Refuses a file that holds secrets and that every user can read (`mode`
/// has the "others may read" bit). Group-readable is fine: the package
/// installs the file `root:broadcast-agent 0640`.
pub(super) fn check_exposure(path: &Path, raw: &str, mode: u32) -> Result<(), ConfigError> {
    if mode & 0o004 == 0 {
        return Ok(());
    }
    let keys = inline_secrets(raw);
    if keys.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Exposed {
        path: path.to_owned(),
        mode: mode & 0o7777,
        keys: keys.join(", "),
    })
}

/// The secret keys the file itself sets to a non-empty value.
fn inline_secrets(raw: &str) -> Vec<String> {
    let Ok(table) = raw.parse::<toml::Table>() else {
        return Vec::new();
    };
    let set = |section: &toml::Value, key: &str| {
        section
            .get(key)
            .and_then(toml::Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    let mut keys: Vec<String> = SECRET_KEYS
        .iter()
        .filter(|(section, key)| table.get(*section).is_some_and(|s| set(s, key)))
        .map(|(section, key)| format!("{section}.{key}"))
        .collect();
    let relays = table.get("relay").and_then(toml::Value::as_array);
    for (i, relay) in relays.into_iter().flatten().enumerate() {
        for key in RELAY_SECRET_KEYS {
            if set(relay, key) {
                keys.push(format!("relay[{i}].{key}"));
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{error, load, load_env};

    #[test]
    fn secrets_are_read_from_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write secret");
            path.display().to_string()
        };
        let api = file("api", "api-from-file\n");
        let pin = file("pin", "1234\r\n");
        let s = load(&format!(
            "[janus]\napi_secret_file = \"{api}\"\n[room]\npin_file = \"{pin}\"\n"
        ))
        .expect("valid");
        assert_eq!(
            s.janus.api_secret.as_ref().map(Secret::expose),
            Some("api-from-file")
        );
        assert_eq!(s.room.pin.as_ref().map(Secret::expose), Some("1234"));
        assert!(s.room.secret.is_none());
        // Shown as a path, never as the secret.
        let shown = s.to_masked_toml();
        assert!(!shown.contains("api-from-file") && shown.contains("api_secret_file"));

        let both = error(&format!(
            "[room]\nsecret = \"x\"\nsecret_file = \"{api}\"\n"
        ));
        assert!(
            both.contains("room.secret_file: set either room.secret or room.secret_file"),
            "{both}"
        );
        let missing = error("[room]\nadmin_key_file = \"/nonexistent/key\"\n");
        assert!(
            missing.contains("room.admin_key_file: cannot read /nonexistent/key"),
            "{missing}"
        );
        let empty = file("empty", "\n");
        let e = error(&format!("[janus]\ntoken_file = \"{empty}\"\n"));
        assert!(
            e.contains("janus.token_file") && e.contains("is empty"),
            "{e}"
        );
    }

    #[test]
    fn secret_files_can_live_in_systemd_credentials() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("token"), "tok\n").expect("write");
        let credentials = dir.path().display().to_string();
        for path in ["%d/token", "$CREDENTIALS_DIRECTORY/token"] {
            let s = load_env(
                &format!("[janus]\ntoken_file = \"{path}\"\n"),
                &[("CREDENTIALS_DIRECTORY", &credentials)],
            )
            .expect("valid");
            assert_eq!(s.janus.token.as_ref().map(Secret::expose), Some("tok"));
        }
        let e = error("[janus]\ntoken_file = \"%d/token\"\n");
        assert!(
            e.contains("janus.token_file") && e.contains("$CREDENTIALS_DIRECTORY is not set"),
            "{e}"
        );
        // The unit can name the file through the environment, where systemd expands %d.
        let s = load_env(
            "",
            &[
                ("CREDENTIALS_DIRECTORY", &credentials),
                ("BROADCAST_AGENT__JANUS__TOKEN_FILE", "%d/token"),
            ],
        )
        .expect("valid");
        assert_eq!(s.janus.token.as_ref().map(Secret::expose), Some("tok"));
    }

    #[test]
    fn check_leaves_systemd_credentials_to_the_service() {
        let toml = "[janus]\ntoken_file = \"%d/janus_token\"\n";
        let checked = Settings::from_sources(Path::new("agent.toml"), toml, [], Purpose::Check)
            .expect("valid for check");
        assert_eq!(checked.deferred_secrets, ["janus.token_file"]);
        assert!(checked.janus.token.is_none());
        // With the variable set (inside the service), check reads it too.
        let dir = tempfile::tempdir().expect("temp dir");
        let credentials = [(
            CREDENTIALS_VARIABLE.to_owned(),
            dir.path().display().to_string(),
        )];
        let e = Settings::from_sources(Path::new("agent.toml"), toml, credentials, Purpose::Check)
            .expect_err("missing credential")
            .to_string();
        assert!(e.contains("janus.token_file: cannot read"), "{e}");
    }

    #[test]
    fn a_world_readable_file_with_secrets_is_refused() {
        let path = Path::new("/etc/broadcast-agent/agent.toml");
        let raw = "[janus]\ntoken = \"t\"\n[room]\nsecret = \"s\"\npin = \"\"\n";
        let e = check_exposure(path, raw, 0o100_644)
            .expect_err("refused")
            .to_string();
        assert!(
            e.starts_with(
                "/etc/broadcast-agent/agent.toml: holds secrets (janus.token, room.secret)"
            ),
            "{e}"
        );
        assert!(
            e.contains("mode 0644") && e.contains("chmod 640 /etc/broadcast-agent/agent.toml"),
            "{e}"
        );
        check_exposure(path, raw, 0o100_640).expect("group-readable is fine");
        let edge = "[[relay]]\nurl = \"http://e/janus\"\n[[relay]]\nadmin_key = \"k\"\n";
        let e = check_exposure(path, edge, 0o100_644)
            .expect_err("an edge's key is a secret too")
            .to_string();
        assert!(e.contains("holds secrets (relay[1].admin_key)"), "{e}");
        check_exposure(path, "[room]\nid = 3\nsecret_file = \"/x\"\n", 0o100_644)
            .expect("no inline secret");
    }
}
