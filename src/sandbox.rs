//! What the systemd unit lets the agent write, for `broadcast-agent check`.
//!
//! Under `ProtectSystem=strict` the whole file system is read-only for the
//! service except its `StateDirectory=`, `CacheDirectory=`, `LogsDirectory=`
//! and `ReadWritePaths=` (`RuntimeDirectory=` and the private `/tmp` are
//! writable too, but lost at every stop). The unit is read where systemd
//! reads it (with the drop-ins of `systemctl edit`); where it is not
//! installed, the unit shipped with this agent is what would be.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The unit as this agent ships it.
const SHIPPED_UNIT: &str = include_str!("../systemd/broadcast-agent.service");
/// Where an installed unit is looked for, in systemd's order.
const UNIT_PATHS: [&str; 3] = [
    "/etc/systemd/system/broadcast-agent.service",
    "/lib/systemd/system/broadcast-agent.service",
    "/usr/lib/systemd/system/broadcast-agent.service",
];
/// The drop-ins `systemctl edit broadcast-agent` writes.
const DROP_IN_DIR: &str = "/etc/systemd/system/broadcast-agent.service.d";

/// The folders the unit lets the service write, lasting across restarts.
pub fn writable_paths() -> Vec<PathBuf> {
    let unit = UNIT_PATHS
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .unwrap_or_else(|| SHIPPED_UNIT.to_owned());
    let mut texts = vec![unit];
    if let Ok(entries) = fs::read_dir(DROP_IN_DIR) {
        let mut drop_ins: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        drop_ins.retain(|p| p.extension().is_some_and(|e| e == "conf"));
        drop_ins.sort();
        texts.extend(drop_ins.iter().filter_map(|p| fs::read_to_string(p).ok()));
    }
    writable_in(&texts)
}

/// The writable folders `texts` (a unit, then its drop-ins) give.
fn writable_in(texts: &[String]) -> Vec<PathBuf> {
    let roots = [
        ("StateDirectory", "/var/lib"),
        ("CacheDirectory", "/var/cache"),
        ("LogsDirectory", "/var/log"),
        ("ReadWritePaths", "/"),
    ];
    let mut lists: Vec<Vec<PathBuf>> = vec![Vec::new(); roots.len()];
    let lines = texts.iter().flat_map(|t| t.lines()).map(str::trim);
    for line in lines {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let Some(i) = roots.iter().position(|(k, _)| *k == key.trim()) else {
            continue;
        };
        if value.trim().is_empty() {
            lists[i].clear(); // an empty assignment resets the list
        }
        let paths = value
            .split_whitespace()
            .map(|v| v.trim_start_matches(['-', '+']));
        lists[i].extend(paths.map(|p| Path::new(roots[i].1).join(p.trim_start_matches('/'))));
    }
    lists.concat()
}

/// Whether `dir` is inside one of `writable`.
pub fn is_writable(dir: &Path, writable: &[PathBuf]) -> bool {
    writable.iter().any(|root| dir.starts_with(root))
}

/// Why this process may not create files in `dir`, when it may not: the
/// folder's owner and mode and this user; `None` when it may, or when `dir`
/// does not exist yet (the unit makes its own folders at start).
pub fn not_writable_by_me(dir: &Path) -> Option<String> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid C string; access only reads it.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        return None;
    }
    let error = std::io::Error::last_os_error();
    let meta = fs::metadata(dir).ok()?;
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Some(format!(
        "{} (owner uid {}, gid {}, mode {:04o}) is not writable by uid {uid} gid {gid}, \
         which runs this check: {error}",
        dir.display(),
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777
    ))
}

/// The free space, in bytes, of the file system `dir` (or the nearest
/// existing folder above it) is on; `None` when it cannot be asked.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let path = CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `stat` a buffer statvfs fills.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // u32 on 32-bit targets (armhf), u64 here.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Some(blocks.saturating_mul(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_unit_writes_only_its_own_folders() {
        let writable = writable_in(&[SHIPPED_UNIT.to_owned()]);
        assert!(is_writable(
            Path::new("/var/lib/broadcast-agent/recordings"),
            &writable
        ));
        assert!(!is_writable(Path::new("/home/pi/recordings"), &writable));
        assert!(!is_writable(Path::new("/var/lib/other"), &writable));
    }

    #[test]
    fn drop_ins_add_and_reset_read_write_paths() {
        let unit = SHIPPED_UNIT.to_owned();
        let drop_in = "[Service]\nReadWritePaths=-/mnt/usb /srv/rec\n".to_owned();
        let writable = writable_in(&[unit.clone(), drop_in.clone()]);
        assert!(is_writable(Path::new("/mnt/usb/rec"), &writable));
        assert!(is_writable(Path::new("/srv/rec"), &writable));
        let reset = "[Service]\nReadWritePaths=\n".to_owned();
        assert!(!is_writable(
            Path::new("/mnt/usb"),
            &writable_in(&[unit, drop_in, reset])
        ));
    }
}
