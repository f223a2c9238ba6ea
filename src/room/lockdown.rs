//! Whether this Janus lets anybody create rooms. The viewer page talks to
//! Janus's API, so every viewer can send requests: on a Janus whose plugins
//! have no `admin_key`, a viewer can create a chat, a room or a mountpoint
//! with the broadcast's id while it is closed, and own it once it opens.
//! The agent cannot prevent that, but it can tell: each create of a plugin
//! that lets it through without a key is proof, said once with the fix.

use std::sync::Mutex;

use crate::janus::JanusError;
use crate::secret::Secret;

/// What the agent learned of the plugins' admin keys, for one reconciler.
#[derive(Debug, Default)]
pub(super) struct Lockdown {
    learned: Mutex<Learned>,
}

#[derive(Debug, Default)]
struct Learned {
    /// Plugins known to refuse a create without the key.
    locked: Vec<&'static str>,
    /// The warning was given.
    warned: bool,
}

impl Lockdown {
    /// Creates with `create`, which sends the admin key it is given. With
    /// `admin_key` configured, a plugin not yet known to need it is asked
    /// first without: a refusal naming `admin_key` shows it is locked (and
    /// the create is sent again with the key); a create that goes through
    /// made the agent's own room, with its secret, as the keyed one would
    /// have, and shows the plugin open. Without a key, any create that goes
    /// through shows it open.
    pub(super) fn create<T>(
        &self,
        plugin: &'static str,
        room: u64,
        admin_key: Option<&Secret>,
        create: impl Fn(Option<&Secret>) -> Result<T, JanusError>,
    ) -> Result<T, JanusError> {
        if admin_key.is_some() && self.is_locked(plugin) {
            return create(admin_key);
        }
        match create(None) {
            Ok(made) => {
                self.found_open(plugin, room);
                Ok(made)
            }
            Err(e) if admin_key.is_some() && e.lacks_admin_key() => {
                self.lock(plugin);
                create(admin_key)
            }
            Err(e) => Err(e),
        }
    }

    fn is_locked(&self, plugin: &str) -> bool {
        self.learned().locked.contains(&plugin)
    }

    fn lock(&self, plugin: &'static str) {
        let mut learned = self.learned();
        if !learned.locked.contains(&plugin) {
            learned.locked.push(plugin);
        }
    }

    /// Warns, once, that `plugin` let room `room` be created without a key.
    fn found_open(&self, plugin: &str, room: u64) {
        let mut learned = self.learned();
        if std::mem::replace(&mut learned.warned, true) {
            return;
        }
        log::warn!(
            "Janus lets anybody create rooms: {plugin} made {room} without an admin_key, and would \
             for any viewer of the page, who could take the broadcast's id (its chat, its room, its \
             mountpoint) while it is closed. Set admin_key (and lock_rtp_forward) on the AudioBridge, \
             Streaming, TextRoom and VideoRoom plugins (deploy/janus-conf.sh writes conf/janus with a \
             fresh one) and room.admin_key_file to it"
        );
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        // A panic while holding it ends the process (panic = "abort").
        self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }
}
