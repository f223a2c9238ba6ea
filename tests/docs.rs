//! The documentation cannot drift from the code: every configuration key the
//! agent knows has its row in docs/configuration.md (and no row names a key
//! that is gone), every relative link in README.md and docs/ leads to a file
//! and heading that exist, and every log line the README's troubleshooting
//! quotes is still one the agent prints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The configuration reference.
const REFERENCE: &str = "docs/configuration.md";

/// Fixed parts of the log lines README.md's troubleshooting quotes: each must
/// be in README.md and, as a literal, in the agent's source.
const QUOTED_LOG_LINES: &[&str] = &[
    "cannot reach Janus at ",
    "certificate not trusted (",
    "set janus.ca_file to the CA or certificate Janus serves",
    "; check janus.api_secret / janus.token against the api_secret / tokens Janus has",
    "Janus lets anybody create rooms: ",
    "is the placeholder of the project's conf/janus, which anybody",
    "room.secret is not set, so open_on_start waits: nothing is broadcast until ",
    "on Janus is not this agent's (",
    "camera program {program} not found on PATH: install {package}",
    "GStreamer element {element} is missing: install {package}",
    "; ALSA cards here: {cards}",
    "control.state_dir: cannot write {} ({e}): the owner's choice would not survive a restart, ",
    "Janus has received no {} for {secs} s although the pipeline runs: {hint}",
    "and is readable by every user (mode {mode:04o}); ",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `section.key` for every `key = value` line of a TOML text (one level of
/// tables, as the agent's configuration has); with `commented`, also the
/// keys commented out as `#key = value` (the optional ones conf/agent.toml
/// shows).
fn toml_keys(text: &str, commented: bool) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        // `[section]`, and `[[relay]]` (an array of tables), commented or not.
        let header = line.strip_prefix('#').filter(|_| commented).unwrap_or(line);
        if let Some(name) = header.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim_matches(['[', ']']).to_string();
            continue;
        }
        let line = match line.strip_prefix('#') {
            Some(rest) if commented => rest,
            Some(_) => continue,
            None => line,
        };
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if !section.is_empty() && !key.is_empty() && key.chars().all(is_key_char) {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

/// The keys `broadcast-agent check` prints for an empty configuration:
/// every key that has a default, with that default. (`check` refuses a
/// `control.state_dir` the unit's sandbox would not let it write, so the
/// default stays, as for `cli.rs`'s check of the shipped configuration.)
fn keys_check_prints() -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").expect("empty configuration");
    let out = Command::new(env!("CARGO_BIN_EXE_broadcast-agent"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run broadcast-agent check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check on an empty configuration: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml_keys(&stdout, false)
}

/// One row of the reference: its key (`section.key`) and its cells.
struct Row {
    key: String,
    cells: Vec<String>,
}

/// The reference's rows: under a heading "## `[section]`", each table row
/// whose first cell is a key in backquotes.
fn reference_rows() -> Vec<Row> {
    let text = read(&repo().join(REFERENCE));
    let mut section = None;
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading
                .trim()
                .strip_prefix("`[")
                .and_then(|h| h.strip_suffix("]`"))
                .map(|h| h.trim_matches(['[', ']']).to_string());
            continue;
        }
        let (Some(section), Some(row)) = (&section, line.strip_prefix('|')) else {
            continue;
        };
        let cells: Vec<String> = row
            .trim_end()
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        let key = cells[0].strip_prefix('`').and_then(|c| c.strip_suffix('`'));
        if let Some(key) = key.filter(|k| !k.is_empty() && k.chars().all(is_key_char)) {
            rows.push(Row {
                key: format!("{section}.{key}"),
                cells,
            });
        }
    }
    rows
}

#[test]
fn every_configuration_key_is_in_the_reference() {
    let printed = keys_check_prints();
    assert!(printed.len() > 50, "check printed only {printed:?}");
    let shipped = toml_keys(&read(&repo().join("conf/agent.toml")), true);
    let rows = reference_rows();
    let documented: BTreeSet<String> = rows.iter().map(|r| r.key.clone()).collect();

    let missing: Vec<_> = printed
        .union(&shipped)
        .filter(|k| !documented.contains(*k))
        .collect();
    assert!(missing.is_empty(), "{REFERENCE} has no row for {missing:?}");

    let unknown: Vec<_> = documented
        .iter()
        .filter(|k| !printed.contains(*k) && !shipped.contains(*k))
        .collect();
    assert!(
        unknown.is_empty(),
        "{REFERENCE} documents keys that neither `check` nor conf/agent.toml knows: {unknown:?}"
    );

    for row in &rows {
        assert!(
            row.cells.len() == 4 && row.cells.iter().all(|c| !c.is_empty()),
            "{REFERENCE}: the row of {} needs key, default, unit or values, and what refuses it: {:?}",
            row.key,
            row.cells
        );
    }
}

/// Every markdown file whose links are checked: README.md and docs/**.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut folders = vec![repo().join("docs")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("docs/") {
            let path = entry.expect("docs/ entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A markdown text without its fenced code blocks and inline code spans,
/// where a `](` is not a link.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            let spans: Vec<&str> = line.split('`').collect();
            // Even pieces are outside backquotes.
            for piece in spans.iter().step_by(2) {
                out.push_str(piece);
                out.push(' ');
            }
            out.push('\n');
        }
    }
    out
}

/// The targets of the inline links and images in `text`: `[..](target)`.
fn link_targets(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut targets = Vec::new();
    let mut rest = prose.as_str();
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.to_string());
        rest = &rest[end..];
    }
    targets
}

/// GitHub's anchor for a heading: lower case, spaces to hyphens, other
/// punctuation (but `-` and `_`) dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading of a markdown text (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// What is wrong with one link from `file`, if anything.
fn broken(file: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
        return None;
    }
    let (path, fragment) = match target.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (target, None),
    };
    let dest = if path.is_empty() {
        file.to_path_buf()
    } else {
        file.parent().expect("folder").join(path)
    };
    if !dest.exists() {
        return Some(format!("{target}: no {}", dest.display()));
    }
    let fragment = fragment.filter(|_| dest.extension().is_some_and(|e| e == "md"))?;
    let known = anchors(&read(&dest));
    (!known.contains(fragment)).then(|| format!("{target}: no heading #{fragment}"))
}

#[test]
fn every_link_in_the_documentation_resolves() {
    let files = markdown_files();
    assert!(files.len() > 5, "{files:?}");
    let mut problems = Vec::new();
    for file in &files {
        for target in link_targets(&read(file)) {
            if let Some(problem) = broken(file, &target) {
                let name = file.strip_prefix(repo()).unwrap_or(file);
                problems.push(format!("{}: {problem}", name.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// All of the agent's Rust source, as one text.
fn source() -> String {
    let mut text = String::new();
    let mut folders = vec![repo().join("src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("src/") {
            let path = entry.expect("src/ entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&read(&path));
            }
        }
    }
    text
}

/// A fragment as README.md shows it: the source's placeholders (`{name}`)
/// stand for what the agent fills in, so only the text between them counts.
fn fixed_parts(fragment: &str) -> Vec<&str> {
    fragment
        .split(['{', '}'])
        .step_by(2)
        .map(str::trim)
        .filter(|p| p.len() > 3)
        .collect()
}

#[test]
fn the_troubleshooting_quotes_log_lines_the_agent_prints() {
    let readme = read(&repo().join("README.md"));
    let source = source();
    for fragment in QUOTED_LOG_LINES {
        assert!(
            source.contains(fragment),
            "the agent's source no longer says {fragment:?}"
        );
        for part in fixed_parts(fragment) {
            assert!(
                readme.contains(part),
                "README.md's troubleshooting does not quote {part:?}"
            );
        }
    }
}
