//! Wiring for `broadcast-agent run`: starts the reconciler and the tasks
//! around it, turns signals into commands, and shuts everything down in order.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Settings;
use crate::janus::{Client, TlsSetupError};
use crate::media::{self, MediaError};
use crate::room::{self, Command};

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The settings are unusable (exit status 78).
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// GStreamer could not be initialised.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The runtime or a signal handler could not be set up.
    #[error("cannot start: {0}")]
    Startup(#[from] std::io::Error),
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(settings: Settings) -> Result<(), RunError> {
    let settings = Arc::new(settings);
    let client = Arc::new(Client::new(&settings.janus)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (room, mut reconciler) = room::spawn(client, Arc::clone(&settings));
        let (_media, pipelines) = media::spawn(&settings, &room.state())?;
        log::info!(
            "broadcast-agent {} started: room {} on {}",
            env!("CARGO_PKG_VERSION"),
            settings.room.id,
            settings.janus.url
        );
        tokio::select! {
            _ = terminate.recv() => log::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => log::info!("SIGINT: stopping"),
            _ = &mut reconciler => {
                log::error!("the room reconciler stopped unexpectedly");
                return Ok::<(), RunError>(());
            }
        }
        room.send(Command::Shutdown).await;
        let _ = reconciler.await;
        // The reconciler's end closes the room watch: each supervisor stops
        // its pipeline (setting it to NULL) and returns.
        for pipeline in pipelines {
            let _ = pipeline.await;
        }
        log::info!("stopped");
        Ok(())
    })
}
