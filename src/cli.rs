//! The command line: its arguments, `--help` with examples, and the manual
//! pages and shell completions made from the same definitions (the hidden
//! `man` and `completions` commands, which the .deb build runs).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use crate::config;

/// The command as installed.
const NAME: &str = "broadcast-agent";

/// What the top-level `--help` and the manual page say before the commands.
const LONG_ABOUT: &str = "\
Turns a Raspberry Pi with a camera, microphone and speaker into the broadcasting \
station of a Janus WebRTC chatroom.

`run` is the daemon systemd starts (broadcast-agent.service); `check` validates a \
configuration; `status`, `open` and `close` talk to the running agent over its \
control socket, as the GPIO buttons do.";

/// The command line of `broadcast-agent`.
#[derive(Debug, Parser)]
#[command(version, about, long_about = LONG_ABOUT, after_help = help_text(sections_of(NAME)))]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the agent (what systemd starts).
    #[command(after_help = help_text(sections_of("run")))]
    Run(ConfigArg),
    /// Validate the configuration and print the effective settings, secrets masked.
    #[command(after_help = help_text(sections_of("check")))]
    Check(ConfigArg),
    /// Show what a running agent is doing, what is wrong and what to do.
    #[command(after_help = help_text(sections_of("status")))]
    Status {
        #[command(flatten)]
        target: SocketArg,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Open the room (as the open button does).
    #[command(after_help = help_text(sections_of("open")))]
    Open(SocketArg),
    /// Close the room (as the close button does).
    #[command(after_help = help_text(sections_of("close")))]
    Close(SocketArg),
    /// Print the completion script for SHELL (for packagers).
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: Shell,
    },
    /// Write the manual pages into DIR (for packagers).
    #[command(hide = true)]
    Man {
        /// The folder to write broadcast-agent.1 and one page per command into.
        dir: PathBuf,
    },
}

/// The configuration file argument.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
}

/// Where to find the running agent's control socket.
#[derive(Debug, clap::Args)]
pub struct SocketArg {
    /// Configuration file naming the control socket.
    #[arg(long, short, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The control socket (instead of reading it from the configuration).
    #[arg(long, short)]
    pub socket: Option<PathBuf>,
}

/// A titled list of terms and what they mean: the examples of a command,
/// and the top page's files and exit statuses. `--help` shows them after
/// the options; the manual page as sections of their own.
struct Section {
    /// The heading, as `--help` writes it.
    title: &'static str,
    /// Each term (a command line, a file, a status) and its explanation.
    items: &'static [(&'static str, &'static str)],
}

const TOP: &[Section] = &[
    Section {
        title: "Examples",
        items: &[
            ("sudo broadcast-agent check", "Is /etc/broadcast-agent/agent.toml valid? Prints the settings the service would use."),
            ("broadcast-agent status", "What the running agent is doing, what is wrong and what to do."),
            ("broadcast-agent open", "Open the room, as the open button does."),
            ("journalctl -u broadcast-agent -f", "Follow the service's log."),
        ],
    },
    Section {
        title: "Files",
        items: &[
            ("/etc/broadcast-agent/agent.toml", "The configuration (owner root, group broadcast-agent, mode 0640). After a change: sudo systemctl reload broadcast-agent."),
            ("/run/broadcast-agent/control.sock", "The control socket status, open and close use (control.socket)."),
            ("/var/lib/broadcast-agent/room.json", "The owner's last choice, open or closed, kept over restarts (control.state_dir)."),
        ],
    },
    Section {
        title: "Exit status",
        items: &[
            ("0", "Success."),
            ("1", "The agent failed, or the control socket could not be reached."),
            ("78", "The configuration cannot be used; the message names the key. systemd does not restart the service on it."),
        ],
    },
];

const RUN: &[Section] = &[Section {
    title: "Examples",
    items: &[
        ("sudo systemctl start broadcast-agent", "How the agent normally runs: the service runs `broadcast-agent run`."),
        ("broadcast-agent run --config ./agent.toml", "Run in the foreground with another configuration (Ctrl-C stops it); SIGHUP re-reads the file."),
    ],
}];

const CHECK: &[Section] = &[Section {
    title: "Examples",
    items: &[
        ("sudo -u broadcast-agent broadcast-agent check", "Check the installed configuration as the service's user, who must be able to write its folders."),
        ("broadcast-agent check --config ./agent.toml", "Check another file; exit status 78 and one line naming the key if it is wrong."),
    ],
}];

const STATUS: &[Section] = &[Section {
    title: "Examples",
    items: &[
        ("broadcast-agent status", "The room's phase on the first line, then each problem with what to do about it, then the details."),
        ("broadcast-agent status --json | jq .status.phase", "The phase for a script: live, opening, closing, closed or conflict."),
        ("broadcast-agent status --socket /run/broadcast-agent/control.sock", "Ask the agent at this socket, without reading the configuration."),
    ],
}];

const OPEN: &[Section] = &[Section {
    title: "Examples",
    items: &[
        ("broadcast-agent open", "Open the room; the choice is kept over restarts. `broadcast-agent status` shows when it is live."),
    ],
}];

const CLOSE: &[Section] = &[Section {
    title: "Examples",
    items: &[
        ("broadcast-agent close", "Close the room: viewers are disconnected and it stays closed, over restarts too, until opened."),
    ],
}];

/// The sections of the command named `name` ([`NAME`] for the top), for
/// both its `--help` and its manual page.
fn sections_of(name: &str) -> &'static [Section] {
    match name {
        NAME => TOP,
        "run" => RUN,
        "check" => CHECK,
        "status" => STATUS,
        "open" => OPEN,
        "close" => CLOSE,
        _ => &[],
    }
}

/// The sections as `--help` shows them, after the options.
fn help_text(sections: &[Section]) -> String {
    let mut text = String::new();
    for section in sections {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(section.title);
        text.push_str(":\n");
        for (term, meaning) in section.items {
            text.push_str(&format!("  {term}\n      {meaning}\n"));
        }
    }
    text.trim_end().to_owned()
}

/// The command line without clap's `help` command, which pages and
/// scripts need not name.
fn command() -> Command {
    Cli::command().disable_help_subcommand(true)
}

/// The name bash's script is made for: clap_complete's bash generator
/// misspells the states of a hyphenated name, so that no command's options
/// complete (clap-rs/clap#6421); the script is then registered for [`NAME`].
const BASH_NAME: &str = "broadcast_agent";

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = command();
    let mut script = Vec::new();
    if shell == Shell::Bash {
        clap_complete::generate(shell, &mut cmd, BASH_NAME, &mut script);
        let script = String::from_utf8_lossy(&script)
            .replace(&format!(" {BASH_NAME}\n"), &format!(" {NAME}\n"));
        out.write_all(script.as_bytes())
    } else {
        clap_complete::generate(shell, &mut cmd, NAME, &mut script);
        out.write_all(&script)
    }
}

/// Writes `broadcast-agent.1` and a page per visible command
/// (`broadcast-agent-status.1`, ...) into `dir`, creating it; returns the
/// files written.
pub fn write_manual(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
    let mut top = command();
    // Gives each command its full name (`broadcast-agent status`).
    top.build();
    let commands = top.get_subcommands().filter(|c| !c.is_hide_set());
    let mut written = Vec::new();
    for (cmd, name) in std::iter::once((&top, NAME)).chain(commands.map(|c| (c, c.get_name()))) {
        let man = Man::new(cmd.clone()).source(format!("{NAME} {}", env!("CARGO_PKG_VERSION")));
        let path = dir.join(man.get_filename());
        let mut page = Vec::new();
        render_page(&man, cmd, sections_of(name), &mut page)?;
        fs::write(&path, page).map_err(|e| with_path(e, &path))?;
        written.push(path);
    }
    Ok(written)
}

/// One manual page: clap_mangen's sections, then ours.
fn render_page(
    man: &Man,
    cmd: &Command,
    sections: &[Section],
    out: &mut dyn Write,
) -> io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().any(|c| !c.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    let mut roff = Roff::new();
    for section in sections {
        roff.control("SH", [section.title.to_uppercase().as_str()]);
        for (term, meaning) in section.items {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*meaning)]);
        }
    }
    roff.to_writer(out)?;
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
