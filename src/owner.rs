//! What the owner last chose — room open or closed — kept in the state
//! directory (`control.state_dir`), so a room closed for privacy stays closed
//! across a reload, a crash, the watchdog and a reboot.
//!
//! The reconciler publishes each choice (a button, `broadcast-agent
//! open|close`, a room timeout) on a `watch`; [`follow`] writes it to
//! `<state_dir>/room.json` atomically ([`crate::replace`]: a fresh temporary
//! file, fsync, rename, fsync of the directory), so a power cut leaves the old
//! choice or the new one, never half a file. At start [`load`] reads it back;
//! it wins over `room.open_on_start`, which decides only while the owner
//! never chose (no file). Anything else it cannot be sure of keeps the room
//! closed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::RoomSettings;
use crate::state::{CloseReason, Desired, Earlier};

/// The file's name inside `control.state_dir`.
const FILE_NAME: &str = "room.json";
/// The file's mode: the agent's, and its group's to read.
const MODE: u32 = 0o640;

/// The owner's choice: open, or closed and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Open or closed.
    pub desired: Desired,
    /// Why it is closed, while it is.
    pub closed_by: Option<CloseReason>,
}

impl Choice {
    /// Open.
    pub const OPEN: Self = Self {
        desired: Desired::Open,
        closed_by: None,
    };

    /// Closed, for `reason`.
    pub fn closed(reason: CloseReason) -> Self {
        Self {
            desired: Desired::Closed,
            closed_by: Some(reason),
        }
    }

    /// What the configuration says before the owner chose anything:
    /// `room.open_on_start`, once there is a `room.secret` (a fresh
    /// install, configured by nobody yet, broadcasts nothing).
    pub fn on_start(room: &RoomSettings) -> Self {
        match (room.open_on_start, room.secret.is_some()) {
            (false, _) => Self::closed(CloseReason::Command),
            (true, false) => Self::closed(CloseReason::Unconfigured),
            (true, true) => Self::OPEN,
        }
    }
}

/// The choice as the file holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "room", content = "reason")]
enum Stored {
    Open,
    Closed(StoredReason),
}

/// Why it was closed, as the file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredReason {
    Command,
    IdleTimeout,
    MaxDuration,
}

impl From<StoredReason> for Earlier {
    fn from(reason: StoredReason) -> Self {
        match reason {
            StoredReason::Command => Self::Owner,
            StoredReason::IdleTimeout => Self::IdleTimeout,
            StoredReason::MaxDuration => Self::MaxDuration,
        }
    }
}

impl From<Choice> for Stored {
    fn from(choice: Choice) -> Self {
        match (choice.desired, choice.closed_by) {
            (Desired::Open, _) => Self::Open,
            (Desired::Closed, Some(CloseReason::IdleTimeout)) => {
                Self::Closed(StoredReason::IdleTimeout)
            }
            (Desired::Closed, Some(CloseReason::MaxDuration)) => {
                Self::Closed(StoredReason::MaxDuration)
            }
            // Still closed for the same reason, through a restart.
            (Desired::Closed, Some(CloseReason::Restored(earlier))) => {
                Self::Closed(match earlier {
                    Earlier::Owner => StoredReason::Command,
                    Earlier::IdleTimeout => StoredReason::IdleTimeout,
                    Earlier::MaxDuration => StoredReason::MaxDuration,
                })
            }
            (Desired::Closed, _) => Self::Closed(StoredReason::Command),
        }
    }
}

/// The stored choice could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading the file failed (a missing file included).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file holds something else than a choice.
    #[error("{} is not a saved choice: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Writing (or renaming, or syncing) failed.
    #[error("cannot save the owner's choice in {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The file in `state_dir` that holds the choice.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The choice to start with: the stored one (a closed room is shown as
/// [`CloseReason::Restored`], with why it was closed), or, when the owner
/// never chose (no file), what the configuration says ([`Choice::on_start`]).
/// Fails closed: a file that cannot be read or is not a choice, or a
/// `state_dir` that cannot be written (the next choice would be lost),
/// keeps the room closed until the owner opens it, and says why.
pub fn load(state_dir: &Path, room: &RoomSettings) -> Choice {
    if let Err(e) = check_writable(state_dir) {
        log::error!(
            "control.state_dir: cannot write {} ({e}): the owner's choice would not survive a restart, \
             so the room stays closed until opened; give the service a writable folder (StateDirectory=)",
            state_dir.display()
        );
        return Choice::closed(CloseReason::Unwritable);
    }
    let reason = match read(&path(state_dir)) {
        Ok(Stored::Open) => return Choice::OPEN,
        Ok(Stored::Closed(reason)) => Earlier::from(reason),
        Err(StoreError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let choice = Choice::on_start(room);
            if choice.closed_by == Some(CloseReason::Unconfigured) {
                log::warn!(
                    "room {}: room.secret is not set, so open_on_start waits: nothing is broadcast until \
                     the owner sets it (room.secret_file) or opens the room",
                    room.id
                );
            }
            return choice;
        }
        Err(e) => {
            log::error!(
                "{e}: the owner's last choice is unknown, so the room stays closed until opened"
            );
            return Choice::closed(CloseReason::Unreadable);
        }
    };
    let restored = CloseReason::Restored(reason);
    log::info!(
        "room {}: {} ({}): it stays closed until opened",
        room.id,
        restored.words(),
        path(state_dir).display()
    );
    Choice::closed(restored)
}

/// Whether a file can be made in `state_dir` (made if missing): a fresh
/// name, made and removed.
fn check_writable(state_dir: &Path) -> io::Result<()> {
    fs::create_dir_all(state_dir)?;
    let probe = state_dir.join(format!(".write-check.{}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

fn read(path: &Path) -> Result<Stored, StoreError> {
    let text = fs::read(path).map_err(|source| StoreError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// Writes `choice` to the file in `state_dir`, atomically.
pub fn save(state_dir: &Path, choice: Choice) -> Result<(), StoreError> {
    let target = path(state_dir);
    let fail = |source| StoreError::Write {
        path: target.clone(),
        source,
    };
    let write = |mut text: Vec<u8>| -> io::Result<()> {
        text.push(b'\n');
        fs::create_dir_all(state_dir)?;
        crate::replace::replace(&target, &text, MODE)
    };
    serde_json::to_vec(&Stored::from(choice))
        .map_err(io::Error::other)
        .and_then(write)
        .map_err(fail)
}

/// Writes every new choice published on `choices` until the sender is
/// dropped (the reconciler stopped); the last one is written before it ends.
pub fn follow(state_dir: PathBuf, mut choices: watch::Receiver<Choice>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        while choices.changed().await.is_ok() {
            let choice = *choices.borrow_and_update();
            let dir = state_dir.clone();
            let saved = tokio::task::spawn_blocking(move || save(&dir, choice)).await;
            match saved {
                Ok(Ok(())) => failing = false,
                Ok(Err(e)) if !failing => {
                    log::warn!("{e}: after a restart the room may open again");
                    failing = true;
                }
                Ok(Err(_)) => {}
                Err(e) => log::warn!("saving the owner's choice: {e}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(open_on_start: bool, secret: Option<&str>) -> RoomSettings {
        RoomSettings {
            open_on_start,
            secret: secret.and_then(crate::secret::Secret::new),
            ..RoomSettings::default()
        }
    }

    #[test]
    fn a_saved_choice_wins_over_open_on_start_and_keeps_its_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        save(dir.path(), Choice::closed(CloseReason::IdleTimeout)).expect("save");
        let restored = Choice::closed(CloseReason::Restored(Earlier::IdleTimeout));
        assert_eq!(load(dir.path(), &room(true, Some("s"))), restored);
        // Saved again while still closed: still the idle timeout's.
        save(dir.path(), restored).expect("save");
        assert_eq!(load(dir.path(), &room(true, Some("s"))), restored);
        save(dir.path(), Choice::OPEN).expect("save");
        assert_eq!(load(dir.path(), &room(false, None)), Choice::OPEN);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "a temporary file was left behind");
    }

    #[test]
    fn only_a_missing_file_lets_the_configuration_decide() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path(), &room(true, Some("s"))), Choice::OPEN);
        assert_eq!(
            load(dir.path(), &room(false, Some("s"))),
            Choice::closed(CloseReason::Command)
        );
        fs::write(path(dir.path()), "{\"room\":\"clo").expect("write");
        assert_eq!(
            load(dir.path(), &room(true, Some("s"))),
            Choice::closed(CloseReason::Unreadable)
        );
    }

    #[test]
    fn without_a_room_secret_nothing_opens_by_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            load(dir.path(), &room(true, None)),
            Choice::closed(CloseReason::Unconfigured)
        );
        // The owner's own choice opens it, secret or not.
        save(dir.path(), Choice::OPEN).expect("save");
        assert_eq!(load(dir.path(), &room(true, None)), Choice::OPEN);
    }

    #[test]
    fn a_state_dir_that_cannot_be_written_keeps_the_room_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        fs::write(&file, "").expect("write");
        assert_eq!(
            load(&file.join("state"), &room(true, Some("s"))),
            Choice::closed(CloseReason::Unwritable)
        );
    }
}
