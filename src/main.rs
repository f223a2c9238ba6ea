//! `broadcast-agent`: the Raspberry Pi end of a Janus WebRTC chatroom.
//!
//! `run` is the daemon systemd starts; `check` validates a configuration;
//! `status`, `open` and `close` talk to a running agent over its control
//! socket, exactly as the GPIO buttons do. The command line itself is in
//! [`cli`].

mod agent;
mod backoff;
mod cli;
mod config;
mod controls;
mod h264;
mod janus;
mod media;
mod metrics;
mod owner;
mod problems;
mod relay;
mod replace;
mod resolve;
mod room;
mod rtp;
mod sandbox;
mod secret;
mod signalling;
mod state;
mod status;
mod systemd;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Cmd, SocketArg};
use crate::config::{Purpose, Settings};
use crate::controls::socket::{self, Request};

/// Exit status for a configuration the agent cannot use (sysexits' EX_CONFIG);
/// the unit's `RestartPreventExitStatus=78` stops systemd retrying it.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    systemd::init_logging(log::LevelFilter::Info);
    match cli.command {
        Cmd::Run(arg) => run(&arg.config),
        Cmd::Check(arg) => check(&arg.config),
        Cmd::Status { target, json } => control(&target, Request::Status, |reply| {
            if json {
                reply["status"].to_string() + "\n"
            } else {
                reply["text"].as_str().unwrap_or_default().to_owned()
            }
        }),
        Cmd::Open(target) => control(&target, Request::Open, |_| "open requested\n".into()),
        Cmd::Close(target) => control(&target, Request::Close, |_| "close requested\n".into()),
        Cmd::Completions { shell } => match cli::completions(shell, &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("cannot write the completion script: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Man { dir } => match cli::write_manual(&dir) {
            Ok(pages) => {
                for page in pages {
                    println!("{}", page.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                log::error!("cannot write the manual pages: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Validates the configuration at `path` as the service would load it, and
/// prints it with secrets masked.
fn check(path: &Path) -> ExitCode {
    let settings = match load(path, Purpose::Check) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    if let Err(code) = check_folders(&settings) {
        return code;
    }
    println!("# {}: valid", path.display());
    for key in &settings.deferred_secrets {
        println!(
            "# {key}: in systemd's credentials directory, read by the service (LoadCredential=); not checked here"
        );
    }
    let settings = std::sync::Arc::new(settings);
    if let Some(missing) = media::camera_missing(&settings) {
        println!("# video.source: {missing}");
    }
    print!("{settings}");
    ExitCode::SUCCESS
}

fn run(path: &Path) -> ExitCode {
    let settings = match load(path, Purpose::Run) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    systemd::set_log_level(settings.log.level);
    match agent::run(path, settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_config() => {
            log::error!("config error: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// How to let the service write node exporter's folder, as docs/metrics.md
/// says.
const METRICS_FOLDER_HINT: &str = "; Debian's prometheus-node-exporter makes its folder \
     root:root 0755: let the group broadcast-agent write it with \
     `sudo chgrp broadcast-agent DIR && sudo chmod 1775 DIR` (docs/metrics.md)";

/// Refuses a folder the agent must write that the unit's sandbox keeps
/// read-only, or that this user may not write (run `check` as the
/// service's user to know); warns when the recordings' budget exceeds the
/// free space.
fn check_folders(settings: &Settings) -> Result<(), ExitCode> {
    let writable = sandbox::writable_paths();
    let recording = &settings.recording;
    let mut folders: Vec<(&str, &Path)> = vec![("control.state_dir", &settings.control.state_dir)];
    if recording.enabled {
        folders.push(("recording.dir", &recording.dir));
    }
    let metrics = settings.metrics.textfile.parent();
    if let Some(dir) = metrics.filter(|_| settings.metrics.enabled()) {
        folders.push(("metrics.textfile", dir));
    }
    for (key, dir) in folders {
        if !sandbox::is_writable(dir, &writable) {
            let list: Vec<_> = writable.iter().map(|p| p.display().to_string()).collect();
            log::error!(
                "config error: {key}: {} is read-only for the service (ProtectSystem=strict; \
                 writable: {}): choose a folder there or add ReadWritePaths={} with `systemctl edit broadcast-agent`",
                dir.display(),
                list.join(", "),
                dir.display()
            );
            return Err(ExitCode::from(EX_CONFIG));
        }
        if let Some(refusal) = sandbox::not_writable_by_me(dir) {
            let hint = match key {
                "metrics.textfile" => METRICS_FOLDER_HINT,
                _ => "",
            };
            log::error!("config error: {key}: {refusal}{hint}");
            return Err(ExitCode::from(EX_CONFIG));
        }
    }
    let free = recording
        .enabled
        .then(|| sandbox::free_bytes(&recording.dir))
        .flatten();
    if let Some(free) = free.filter(|&f| f < recording.max_total_bytes()) {
        log::warn!(
            "recording.dir: {} has {} MB free, less than recording.max_total_mb = {}: \
             the disk fills before old segments are deleted",
            recording.dir.display(),
            free / 1_000_000,
            recording.max_total_mb
        );
    }
    Ok(())
}

/// Loads the settings, or logs the one-line reason and returns exit status 78.
fn load(path: &Path, purpose: Purpose) -> Result<Settings, ExitCode> {
    Settings::load_for(path, purpose).map_err(|e| {
        log::error!("config error: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

/// Sends a request to the running agent and prints `show(reply)`.
fn control(
    target: &SocketArg,
    request: Request,
    show: impl Fn(&serde_json::Value) -> String,
) -> ExitCode {
    let path = match &target.socket {
        Some(path) => path.clone(),
        None => match Settings::load(&target.config) {
            Ok(settings) => settings.control.socket,
            // The default file may be unreadable to this user: the default
            // socket is then the best guess. An explicit file must load.
            Err(_) if target.config == Path::new(config::DEFAULT_PATH) => {
                config::ControlSettings::default().socket
            }
            Err(e) => {
                log::error!("config error: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        },
    };
    match socket::request(&path, request) {
        Ok(reply) => {
            print!("{}", show(&reply));
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
