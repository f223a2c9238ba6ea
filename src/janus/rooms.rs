//! What AudioBridge and TextRoom rooms have in common: the same requests to
//! tell whether a room exists, to destroy it, and to prove whose it is.

use serde_json::{json, Value};

use super::{edit_request, exists_flag, ignore_code, insert_secret, JanusError, Listing};
use crate::secret::Secret;

/// What checking a room with the agent's secret finds.
#[derive(Debug)]
pub enum Holding<P> {
    /// No room with that id.
    Absent,
    /// The room answers to another secret.
    OtherSecret,
    /// The room has no secret: it obeys anybody, so it proves nothing.
    NoSecret,
    /// The room is the agent's; `P` is what proving it returned.
    Ours(P),
}

/// A plugin whose rooms have ids and secrets.
pub trait RoomPlugin {
    /// The plugin's error for an unknown room.
    const NO_SUCH_ROOM: u16;
    /// The plugin's errors for a wrong or missing secret.
    const REFUSED: [u16; 2];
    /// Whether its `edit` can remove a PIN (an empty `new_pin`); where it
    /// cannot, a room that must lose its PIN is made again.
    const CLEARS_PIN: bool;
    /// What a request that needs the room's secret returns.
    type Proof;

    /// Sends `body` to the plugin; its reply's data.
    fn request(&self, body: Value) -> Result<Value, JanusError>;

    /// A request that changes nothing but needs the room's secret.
    fn control(&self, room: u64, secret: Option<&Secret>) -> Result<Self::Proof, JanusError>;

    /// Whether `error` is the plugin refusing the secret given for a room.
    fn refuses(error: &JanusError) -> bool {
        error
            .code()
            .is_some_and(|code| Self::REFUSED.contains(&code))
    }

    /// Whether the room exists.
    fn exists(&self, room: u64) -> Result<bool, JanusError> {
        exists_flag(&self.request(json!({ "request": "exists", "room": room }))?)
    }

    /// Destroys the room; a room that is already gone is not an error.
    fn destroy(&self, room: u64, secret: Option<&Secret>) -> Result<(), JanusError> {
        let mut body = json!({ "request": "destroy", "room": room });
        insert_secret(&mut body, "secret", secret);
        ignore_code(self.request(body), Self::NO_SUCH_ROOM)
    }

    /// Gives the room (the agent's: `secret` controls it) `listing`.
    fn edit_listing(
        &self,
        room: u64,
        secret: Option<&Secret>,
        listing: Listing<'_>,
    ) -> Result<(), JanusError> {
        self.request(edit_request("room", room, secret, listing))
            .map(drop)
    }

    /// Whether the room is guarded by a secret: the plugin refuses a
    /// made-up one.
    fn is_guarded(&self, room: u64) -> Result<bool, JanusError> {
        let made_up = Secret::new(format!("not-the-secret-{:016x}", rand::random::<u64>()));
        match self.control(room, made_up.as_ref()) {
            Ok(_) => Ok(false),
            Err(e) if Self::refuses(&e) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Whose room `room` is: `secret` must control it and, when there is
    /// one, a made-up secret must not.
    fn holding(
        &self,
        room: u64,
        secret: Option<&Secret>,
    ) -> Result<Holding<Self::Proof>, JanusError> {
        if !self.exists(room)? {
            return Ok(Holding::Absent);
        }
        let proof = match self.control(room, secret) {
            Ok(proof) => proof,
            Err(e) if e.code() == Some(Self::NO_SUCH_ROOM) => return Ok(Holding::Absent),
            Err(e) if Self::refuses(&e) => return Ok(Holding::OtherSecret),
            Err(e) => return Err(e),
        };
        if secret.is_some() && !self.is_guarded(room)? {
            return Ok(Holding::NoSecret);
        }
        Ok(Holding::Ours(proof))
    }
}
