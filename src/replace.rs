//! Replacing a file the agent writes (the owner's choice, the metrics
//! textfile) so that a reader sees the old file or the new one, never a
//! part, and so that nobody else can make the agent write elsewhere.
//!
//! The new text goes to a temporary file beside the target, under a fresh
//! random name, created only if nothing has that name yet and never through
//! a symlink (`O_CREAT | O_EXCL | O_NOFOLLOW`): another user who may write
//! the folder (node exporter's textfile folder is shared) cannot plant a
//! link there that points the write at one of the agent's own files. It is
//! flushed to disk, renamed over the target (a rename replaces a symlink
//! there, it does not follow it), and the folder is synced so the rename
//! survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Names tried before giving up when each one is taken (a name is 64
/// random bits: a clash means someone is planting names).
const ATTEMPTS: usize = 8;

/// Replaces `path` with `contents`, mode `mode` whatever the umask.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let (temporary, mut file) = create_temporary(path)?;
    let result = (|| {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
        File::open(folder.unwrap_or(Path::new(".")))?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// A new, empty file beside `path`, created by this call.
fn create_temporary(path: &Path) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let temporary = temporary_name(path);
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temporary);
        match created {
            Ok(file) => return Ok((temporary, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    let taken = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
    Err(io::Error::new(
        taken.kind(),
        format!("{ATTEMPTS} temporary names beside it were taken: {taken}"),
    ))
}

/// `.<name>.<16 random hex digits>.tmp` beside `path`: hidden, and not
/// `*.prom`, so node exporter skips it.
fn temporary_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_file_is_replaced_whole_with_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.prom");
        replace(&path, b"a 1\n", 0o644).expect("first");
        replace(&path, b"a 2\n", 0o640).expect("second");
        assert_eq!(fs::read_to_string(&path).expect("read"), "a 2\n");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(names(dir.path()), ["agent.prom"], "a temporary was left");
    }

    #[test]
    fn a_planted_symlink_is_neither_followed_nor_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("room.json");
        fs::write(&victim, "{\"room\":\"closed\"}\n").expect("victim");
        let path = dir.path().join("agent.prom");
        // The names the agent used before (one fixed temporary name), and
        // the target itself.
        for planted in ["agent.prom.tmp", ".agent.prom.tmp", "agent.prom"] {
            symlink(&victim, dir.path().join(planted)).expect("symlink");
        }
        replace(&path, b"a 1\n", 0o644).expect("replace");
        let kept = fs::read_to_string(&victim).expect("victim");
        assert_eq!(kept, "{\"room\":\"closed\"}\n", "written through a link");
        let meta = fs::symlink_metadata(&path).expect("target");
        assert!(meta.is_file(), "the target is still a link");
        assert_eq!(fs::read_to_string(&path).expect("read"), "a 1\n");
    }
}
