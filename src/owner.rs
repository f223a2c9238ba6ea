//! What the owner last chose — room open or closed — kept in the state
//! directory (`control.state_dir`), so a room closed for privacy stays closed
//! across a reload, a crash, the watchdog and a reboot.
//!
//! The reconciler publishes each choice (a button, `broadcast-agent
//! open|close`, a room timeout) on a `watch`; [`follow`] writes it to
//! `<state_dir>/room.json` atomically ([`crate::replace`]: a fresh temporary
//! file, fsync, rename, fsync of the directory), so a power cut leaves the old
//! choice or the new one, never half a file. At start [`load`] reads it back; it wins over
//! `room.open_on_start`, which decides only while nothing (valid) is stored.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::{CloseReason, Desired};

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
    /// What `room.open_on_start` says, before the owner chose anything.
    pub fn on_start(open_on_start: bool) -> Self {
        if open_on_start {
            Self {
                desired: Desired::Open,
                closed_by: None,
            }
        } else {
            Self {
                desired: Desired::Closed,
                closed_by: Some(CloseReason::Command),
            }
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
/// [`CloseReason::Restored`]), or, with one warning when the file is missing
/// or unreadable, what `open_on_start` says.
pub fn load(state_dir: &Path, open_on_start: bool) -> Choice {
    match read(&path(state_dir)) {
        Ok(Stored::Open) => Choice::on_start(true),
        Ok(Stored::Closed(_)) => {
            log::info!(
                "the owner closed the room before this start ({}): it stays closed until opened",
                path(state_dir).display()
            );
            Choice {
                desired: Desired::Closed,
                closed_by: Some(CloseReason::Restored),
            }
        }
        Err(e) => {
            log::warn!(
                "{e}; room.open_on_start = {open_on_start} decides until the room is opened or closed"
            );
            Choice::on_start(open_on_start)
        }
    }
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

    fn closed(reason: CloseReason) -> Choice {
        Choice {
            desired: Desired::Closed,
            closed_by: Some(reason),
        }
    }

    #[test]
    fn a_saved_choice_wins_over_open_on_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        save(dir.path(), closed(CloseReason::IdleTimeout)).expect("save");
        assert_eq!(load(dir.path(), true), closed(CloseReason::Restored));
        save(dir.path(), Choice::on_start(true)).expect("save");
        assert_eq!(load(dir.path(), false), Choice::on_start(true));
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "a temporary file was left behind");
    }

    #[test]
    fn a_missing_or_corrupt_file_falls_back_to_open_on_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path(), false), Choice::on_start(false));
        fs::write(path(dir.path()), "{\"room\":\"clo").expect("write");
        assert_eq!(load(dir.path(), true), Choice::on_start(true));
        assert!(matches!(
            read(&path(dir.path())),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
