//! Wiring for `broadcast-agent run`: starts the reconciler and the tasks
//! around it (pipelines, control socket, GPIO, systemd), turns signals into
//! commands, and shuts everything down in order.
//!
//! SIGTERM/SIGINT: close as `destroy_on_close` says, stop the pipelines,
//! exit 0. SIGHUP: re-read the configuration; a bad file is refused (logged)
//! and the agent runs on unchanged; a good one restarts the agent in place,
//! which re-creates the room as a restart would.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::controls::gpio::{self, GpioError};
use crate::controls::socket::{self, ControlError};
use crate::janus::{Client, TlsSetupError};
use crate::media::{self, MediaError};
use crate::metrics;
use crate::owner;
use crate::relay;
use crate::room::{self, Command, RoomHandle};
use crate::signalling::Signalling;
use crate::status::StatusSource;
use crate::systemd;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `janus.ca_file` is unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The GPIO header cannot be used as configured.
    #[error(transparent)]
    Gpio(#[from] GpioError),
    /// The control socket cannot be created.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// GStreamer could not be initialised.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// One Janus request may outlast systemd's watchdog period.
    #[error(
        "janus.request_timeout_ms: {} ms is not below the watchdog period \
         (WatchdogSec = {} ms): lower it, or raise WatchdogSec",
        .request.as_millis(),
        .watchdog.as_millis()
    )]
    Watchdog {
        request: Duration,
        watchdog: Duration,
    },
    /// The runtime or a signal handler could not be set up.
    #[error("cannot start: {0}")]
    Startup(#[from] std::io::Error),
}

impl RunError {
    /// Whether changing the configuration is the fix (exit status 78).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Tls(_) | Self::Gpio(_) | Self::Control(_) | Self::Watchdog { .. }
        )
    }
}

/// How long clean-up may still take once the loop is done: the pipelines
/// are stopped; what is left is a Janus request that does not answer, on a
/// thread nobody waits for.
const LINGER: Duration = Duration::from_millis(200);

/// Refuses a `janus.request_timeout_ms` that one request may spend beyond
/// the watchdog period systemd gave (`WATCHDOG_USEC`): such a request could
/// not be told from a hang.
fn check_watchdog(settings: &Settings) -> Result<(), RunError> {
    let request = settings.janus.request_timeout;
    match systemd::watchdog_period() {
        Some(watchdog) if request >= watchdog => Err(RunError::Watchdog { request, watchdog }),
        _ => Ok(()),
    }
}

/// Runs the agent until SIGTERM or SIGINT; `path` is re-read on SIGHUP.
pub fn run(path: &Path, settings: Settings) -> Result<(), RunError> {
    check_watchdog(&settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(path, settings));
    // Dropping the runtime would wait for a request still hanging on a
    // blocking thread, whatever the shutdown budget said.
    runtime.shutdown_timeout(LINGER);
    result
}

/// The agent's life on the runtime: start, reload on SIGHUP, stop.
async fn serve(path: &Path, settings: Settings) -> Result<(), RunError> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut settings = Arc::new(settings);
    'agent: loop {
        let mut agent = Running::start(Arc::clone(&settings))?;
        systemd::ready();
        log::info!(
            "broadcast-agent {} running: room {} on {}",
            env!("CARGO_PKG_VERSION"),
            settings.room.id,
            settings.janus.url
        );
        loop {
            tokio::select! {
                _ = terminate.recv() => log::info!("SIGTERM: stopping"),
                _ = interrupt.recv() => log::info!("SIGINT: stopping"),
                _ = hangup.recv() => match reload(path) {
                    Ok(new) => {
                        log::info!("SIGHUP: configuration reloaded, restarting in place");
                        systemd::reloading();
                        systemd::set_log_level(new.log.level);
                        agent.stop().await;
                        settings = Arc::new(new);
                        continue 'agent;
                    }
                    Err(e) => {
                        log::error!("SIGHUP: {e}; keeping the running configuration");
                        continue;
                    }
                },
                _ = &mut agent.reconciler => log::error!("the room reconciler stopped unexpectedly"),
            }
            systemd::stopping();
            agent.stop().await;
            log::info!("stopped");
            return Ok(());
        }
    }
}

/// Loads the configuration again (SIGHUP), checked as at the start.
fn reload(path: &Path) -> Result<Settings, String> {
    let new = Settings::load(path).map_err(|e| e.to_string())?;
    check_watchdog(&new).map_err(|e| e.to_string())?;
    Ok(new)
}

/// Everything one configuration runs.
struct Running {
    room: RoomHandle,
    reconciler: JoinHandle<()>,
    /// Writes the owner's choices; ends (having written the last) after the reconciler.
    owner: JoinHandle<()>,
    pipelines: Vec<JoinHandle<()>>,
    /// The edges' keepers: like the pipelines, they end with the room watch.
    relays: Vec<JoinHandle<()>>,
    services: Vec<JoinHandle<()>>,
    socket: Option<std::path::PathBuf>,
}

impl Running {
    /// Starts every task. What can fail on a bad setting (TLS roots, GPIO,
    /// the socket) is set up before anything talks to Janus.
    fn start(settings: Arc<Settings>) -> Result<Self, RunError> {
        let client = Arc::new(Client::new(&settings.janus)?);
        let pins = if settings.gpio.enabled {
            Some(gpio::open(&settings.gpio)?)
        } else {
            None
        };
        let state_dir = settings.control.state_dir.clone();
        let (choice, choices) = watch::channel(owner::load(&state_dir, &settings.room));
        media::init()?;
        let signalling = Arc::new(Signalling::default());
        let edges = Arc::new(relay::Board::new(&settings));
        let uplink = room::UplinkParts {
            signalling: Arc::clone(&signalling),
            local_webrtc: media::uplink::missing_here(),
            edges: Arc::clone(&edges),
        };
        let (room, reconciler) = room::spawn(client, Arc::clone(&settings), choice, uplink);
        let relays = relay::spawn(&settings, &edges, &room.state());
        let owner = owner::follow(state_dir, choices);
        let (media, pipelines) = media::spawn(&settings, &room.state(), &signalling)?;
        let status = StatusSource::new(
            room.state(),
            media,
            Arc::clone(&edges),
            settings.viewer_url(),
        );
        let mut services = vec![tokio::spawn(systemd::keep_informed(
            status.clone(),
            room.clone(),
        ))];
        services.extend(metrics::spawn(
            &settings.metrics,
            room.state(),
            status.clone(),
        ));
        let socket_path = &settings.control.socket;
        let socket = (!socket_path.as_os_str().is_empty()).then(|| socket_path.clone());
        if let Some(path) = &socket {
            services.push(socket::serve(path, room.clone(), status.clone())?);
        }
        if let Some(pins) = pins {
            services.push(gpio::start(&settings.gpio, pins, &room, status)?);
        }
        Ok(Self {
            room,
            reconciler,
            owner,
            pipelines,
            relays,
            services,
            socket,
        })
    }

    /// Cleans up on Janus, stops the pipelines, then the services.
    async fn stop(self) {
        self.room.send(Command::Shutdown).await;
        let _ = self.reconciler.await;
        let _ = self.owner.await;
        // The reconciler's end closes the room watch: each supervisor stops
        // its pipeline (setting it to NULL) and returns.
        for pipeline in self.pipelines.into_iter().chain(self.relays) {
            let _ = pipeline.await;
        }
        // Awaited, not only aborted: a restart in place (SIGHUP) takes the
        // same GPIO pins again, which fails while the old task holds them.
        for service in self.services {
            service.abort();
            let _ = service.await;
        }
        if let Some(path) = self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}
