//! Typed requests to the TextRoom plugin: the room's chat, a text room with
//! the AudioBridge room's id, secret and pin, that viewers reach over a
//! WebRTC data channel.

use serde_json::{json, Value};

use super::audiobridge::Created;
use super::rooms::RoomPlugin;
use super::{created, insert_secret, Client, Handle, JanusError};
use crate::secret::Secret;

/// The plugin's package name, for `attach`.
pub const PLUGIN: &str = "janus.plugin.textroom";

/// TextRoom error codes the agent acts on.
pub mod code {
    /// A required element is missing (e.g. the secret of a guarded room).
    pub const MISSING_ELEMENT: u16 = 413;
    /// No room with that id.
    pub const NO_SUCH_ROOM: u16 = 417;
    /// A room with that id already exists.
    pub const ROOM_EXISTS: u16 = 418;
    /// Wrong secret.
    pub const UNAUTHORIZED: u16 = 419;
}

/// Messages Janus keeps and replays to whoever joins.
const HISTORY: u32 = 50;

/// What the agent asks the chat room to be.
#[derive(Debug, Clone, Copy)]
pub struct ChatSpec<'a> {
    /// Room id (the AudioBridge room's).
    pub id: u64,
    /// Shown to viewers.
    pub description: &'a str,
    /// Needed to destroy or change the room.
    pub secret: Option<&'a Secret>,
    /// Viewers must give it to join.
    pub pin: Option<&'a Secret>,
    /// The plugin's `admin_key`, when Janus requires it to create rooms.
    pub admin_key: Option<&'a Secret>,
}

/// The TextRoom plugin, reached through one handle.
pub struct TextRoom<'a> {
    client: &'a Client,
    handle: Handle,
}

impl<'a> TextRoom<'a> {
    /// Talks to the plugin through `handle`, which must be attached to it.
    pub fn new(client: &'a Client, handle: Handle) -> Self {
        Self { client, handle }
    }

    /// Creates the room, or reports that the id is taken.
    pub fn create(&self, room: &ChatSpec<'_>) -> Result<Created, JanusError> {
        let mut body = json!({
            "request": "create",
            "room": room.id,
            "description": room.description,
            "is_private": true,
            "history": HISTORY,
        });
        insert_secret(&mut body, "secret", room.secret);
        insert_secret(&mut body, "pin", room.pin);
        insert_secret(&mut body, "admin_key", room.admin_key);
        created(self.request(body), code::ROOM_EXISTS)
    }
}

impl RoomPlugin for TextRoom<'_> {
    const NO_SUCH_ROOM: u16 = code::NO_SUCH_ROOM;
    const REFUSED: [u16; 2] = [code::UNAUTHORIZED, code::MISSING_ELEMENT];
    const CLEARS_PIN: bool = false;
    type Proof = ();

    fn request(&self, body: Value) -> Result<Value, JanusError> {
        self.client.plugin_request(self.handle, PLUGIN, body)
    }

    /// An `edit` that changes nothing.
    fn control(&self, room: u64, secret: Option<&Secret>) -> Result<(), JanusError> {
        let mut body = json!({ "request": "edit", "room": room });
        insert_secret(&mut body, "secret", secret);
        self.request(body).map(drop)
    }
}
