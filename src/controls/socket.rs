//! The local control socket, and the client side used by
//! `broadcast-agent status|open|close`.
//!
//! Protocol: one JSON request line, one JSON reply line, then the server
//! closes. Requests: `{"command":"status"}`, `{"command":"open"}`,
//! `{"command":"close"}`. Replies: `{"ok":true,"status":{..},"text":".."}` or
//! `{"ok":false,"error":".."}`. A malformed, oversized or slow request gets an
//! error reply (or is dropped); each client has its own task with a deadline,
//! and the number of clients at once is capped, so no client can block the agent.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::room::{Command, RoomHandle};
use crate::status::StatusSource;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;
/// A client must send its request and read the reply within this time.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// Clients served at once; more wait for a place.
const MAX_CLIENTS: usize = 8;

/// A request on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Report the agent's status.
    Status,
    /// Open the room (as the open button does).
    Open,
    /// Close the room (as the close button does).
    Close,
}

/// The control socket could not be set up, or a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be created.
    #[error("control.socket = {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The client could not talk to the agent.
    #[error("cannot talk to the agent at {path}: {source}; {}", connect_fix(.source))]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent answered with an error or an unreadable reply.
    #[error("{0}")]
    Reply(String),
}

/// What to do when the agent's socket cannot be reached.
fn connect_fix(error: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
            "the agent is not running there: start it with `sudo systemctl start broadcast-agent` \
             (`journalctl -u broadcast-agent` says why it stopped), or name its socket (control.socket, --socket)"
        }
        ErrorKind::PermissionDenied => {
            "this user may not use the socket: use sudo, or join the group broadcast-agent \
             (`sudo adduser $USER broadcast-agent`, then log in again)"
        }
        _ => "is it running? see control.socket",
    }
}

/// Creates the socket (mode 0660, replacing a stale one) and serves it.
pub fn serve(
    path: &Path,
    room: RoomHandle,
    status: StatusSource,
) -> Result<JoinHandle<()>, ControlError> {
    let bind_error = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_error)?;
    }
    if StdUnixStream::connect(path).is_ok() {
        return Err(bind_error(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another agent is serving this socket",
        )));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_error)?;
    let places = Arc::new(Semaphore::new(MAX_CLIENTS));
    let path = path.to_owned();
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::warn!("control socket {}: {e}", path.display());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(place) = Arc::clone(&places).acquire_owned().await else {
                return;
            };
            let (room, status) = (room.clone(), status.clone());
            tokio::spawn(async move {
                let served =
                    tokio::time::timeout(CLIENT_DEADLINE, serve_client(stream, &room, &status))
                        .await;
                if let Ok(Err(e)) = served {
                    log::debug!("control client: {e}");
                }
                drop(place);
            });
        }
    }))
}

/// Reads one request, acts on it, writes one reply.
async fn serve_client(
    stream: UnixStream,
    room: &RoomHandle,
    status: &StatusSource,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    AsyncBufReader::new(read)
        .take(MAX_REQUEST)
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => json!({ "ok": false, "error": format!("bad request: {e}") }),
        Ok(request) => {
            let accepted = match request {
                Request::Status => true,
                Request::Open => room.send(Command::Open).await,
                Request::Close => room.send(Command::Close).await,
            };
            if accepted {
                let snapshot = status.snapshot();
                json!({ "ok": true, "text": snapshot.text(), "status": snapshot })
            } else {
                json!({ "ok": false, "error": "the agent is shutting down" })
            }
        }
    };
    let mut bytes = reply.to_string().into_bytes();
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// Sends `request` to the agent at `path` and returns its reply.
pub fn request(path: &Path, request: Request) -> Result<Value, ControlError> {
    let connect_error = |source| ControlError::Connect {
        path: path.to_owned(),
        source,
    };
    let mut stream = StdUnixStream::connect(path).map_err(connect_error)?;
    stream
        .set_read_timeout(Some(CLIENT_DEADLINE))
        .map_err(connect_error)?;
    stream
        .set_write_timeout(Some(CLIENT_DEADLINE))
        .map_err(connect_error)?;
    let mut line =
        serde_json::to_string(&request).map_err(|e| ControlError::Reply(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(connect_error)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(1 << 20)
        .read_line(&mut reply)
        .map_err(connect_error)?;
    let reply: Value = serde_json::from_str(&reply)
        .map_err(|e| ControlError::Reply(format!("unreadable reply: {e}")))?;
    if reply["ok"] == true {
        Ok(reply)
    } else {
        Err(ControlError::Reply(
            reply["error"]
                .as_str()
                .unwrap_or("the agent refused the request")
                .to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object() {
        assert_eq!(
            serde_json::to_string(&Request::Open).expect("serializes"),
            r#"{"command":"open"}"#
        );
        let parsed: Request = serde_json::from_str(r#"{"command":"status"}"#).expect("parses");
        assert_eq!(parsed, Request::Status);
        assert!(serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>("status").is_err());
    }
}
