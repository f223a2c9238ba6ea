//! `[metrics]`: the textfile node exporter reads, parsed by the Prometheus
//! client library's own text parser (python3-prometheus-client), following
//! the room through a participant, close/open and a Janus restart.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::janus::Janus;
use common::{no_media_config, ports, scratch, wait_for, Agent, Extra};

const SECRET: &str = "metrics-secret";

/// Parses `file` with `prometheus_client.parser`; returns each sample as
/// `name{label="value",...}` (labels sorted) → value. `None` while the
/// file is missing; panics when it does not parse.
fn parse(file: &Path) -> Option<BTreeMap<String, f64>> {
    if !file.exists() {
        return None;
    }
    const SCRIPT: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        print("%s{%s} %r" % (s.name, labels, s.value))
"#;
    // Debian's Python, which python3-prometheus-client installs into.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .arg(file)
        .output()
        .expect("/usr/bin/python3 (run deploy/install-deps.sh)");
    assert!(
        out.status.success(),
        "the metrics file does not parse: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let samples = text
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect();
    Some(samples)
}

/// Waits until the parsed file satisfies `check`.
fn wait_metrics(
    file: &Path,
    what: &str,
    check: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    wait_for(Duration::from_secs(10), what, || {
        parse(file).filter(|m| check(m))
    })
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> Option<f64> {
    m.get(key).copied()
}

fn phase(m: &BTreeMap<String, f64>, room: u64, phase: &str) -> bool {
    let key = format!("broadcast_agent_room_phase{{phase=\"{phase}\",room=\"{room}\"}}");
    value(m, &key) == Some(1.0)
}

#[test]
fn the_textfile_parses_and_follows_the_room() {
    let mut janus = Janus::start();
    let probe = janus.probe();
    let dir = scratch();
    let file = dir.path().join("broadcast_agent.prom");
    let rest = format!(
        "[metrics]\ntextfile = \"{}\"\ninterval_s = 1\n",
        file.display()
    );
    let extra = Extra {
        room: "allow_rtp_participants = true",
        rest: &rest,
        ..Extra::default()
    };
    let agent = Agent::start(&no_media_config(&janus.url(), 61, SECRET, ports(1), extra));
    let live = wait_metrics(&file, "live, no one in the room", |m| {
        phase(m, 61, "live") && value(m, "broadcast_agent_room_participants{}") == Some(0.0)
    });
    let version = format!(
        "broadcast_agent_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&live, &version), Some(1.0), "{live:?}");
    assert_eq!(value(&live, "broadcast_agent_janus_session{}"), Some(1.0));
    assert!(value(&live, "broadcast_agent_uptime_seconds{}").is_some());
    assert_eq!(
        value(&live, "broadcast_agent_janus_present{what=\"forwarder\"}"),
        Some(1.0)
    );
    assert!(!std::fs::read_to_string(&file)
        .expect("read")
        .contains(SECRET));

    // A viewer joins (a plain-RTP participant; its port stays open).
    let local = ports(1);
    let _socket = UdpSocket::bind(("127.0.0.1", local)).expect("bind");
    probe.join_rtp(61, local);
    wait_metrics(&file, "one participant", |m| {
        value(m, "broadcast_agent_room_participants{}") == Some(1.0)
    });

    let (status, _, err) = agent.control(&["close"]);
    assert!(status.success(), "{err}");
    let closed = wait_metrics(&file, "closed", |m| phase(m, 61, "closed"));
    let wanted = "broadcast_agent_room_wanted_open{room=\"61\"}";
    assert_eq!(value(&closed, wanted), Some(0.0));
    assert_eq!(
        value(&closed, "broadcast_agent_janus_present{what=\"room\"}"),
        Some(0.0)
    );
    let (status, _, err) = agent.control(&["open"]);
    assert!(status.success(), "{err}");
    wait_metrics(&file, "live again", |m| phase(m, 61, "live"));

    janus.kill();
    let unreachable = "broadcast_agent_janus_error{class=\"unreachable\"}";
    let counted = "broadcast_agent_janus_errors_total{class=\"unreachable\"}";
    let down = wait_metrics(&file, "Janus unreachable", |m| {
        phase(m, 61, "opening") && value(m, unreachable) == Some(1.0)
    });
    assert!(value(&down, counted) >= Some(1.0), "{down:?}");
    assert_eq!(
        value(&down, "broadcast_agent_janus_present{what=\"room\"}"),
        Some(0.0)
    );
    janus.restart();
    let back = wait_metrics(&file, "live after the restart", |m| {
        phase(m, 61, "live") && value(m, unreachable) == Some(0.0)
    });
    assert!(value(&back, counted) >= Some(1.0), "{back:?}");
    assert_eq!(value(&back, "broadcast_agent_janus_session{}"), Some(1.0));
}

/// With an interval far longer than the test, the file still follows the
/// room's phase (written at each change of it); a symlink planted in the
/// folder at the temporary file's old, fixed name is not written through.
#[test]
fn the_file_follows_each_phase_at_once_and_no_planted_link() {
    let janus = Janus::start();
    let dir = scratch();
    let file = dir.path().join("broadcast_agent.prom");
    let victim = dir.path().join("victim.json");
    std::fs::write(&victim, "{\"room\":\"closed\"}\n").expect("victim");
    let planted = dir.path().join("broadcast_agent.prom.tmp");
    std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
    let rest = format!(
        "[metrics]\ntextfile = \"{}\"\ninterval_s = 3600\n",
        file.display()
    );
    let extra = Extra {
        rest: &rest,
        ..Extra::default()
    };
    let agent = Agent::start(&no_media_config(&janus.url(), 62, SECRET, ports(1), extra));
    wait_metrics(&file, "live, without waiting an interval", |m| {
        phase(m, 62, "live")
    });
    let (status, _, err) = agent.control(&["close"]);
    assert!(status.success(), "{err}");
    wait_metrics(&file, "closed", |m| phase(m, 62, "closed"));
    let (status, _, err) = agent.control(&["open"]);
    assert!(status.success(), "{err}");
    wait_metrics(&file, "live again", |m| phase(m, 62, "live"));

    let kept = std::fs::read_to_string(&victim).expect("victim");
    assert_eq!(kept, "{\"room\":\"closed\"}\n", "written through the link");
    let meta = std::fs::symlink_metadata(&file).expect("textfile");
    assert!(meta.is_file(), "the textfile is a link: {meta:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".tmp") && *n != "broadcast_agent.prom.tmp")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
