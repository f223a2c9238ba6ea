//! The microphone's streaming thread runs at nice -10 while it carries the
//! microphone, and no other thread of the agent's ever does, as
//! `/proc/<agent>/task/*/stat` shows: camera and microphone on test sources
//! to a real Janus, the room closed and opened again a few times, so that
//! GStreamer's pooled streaming threads go back to the pool and are handed
//! out again to whichever pipeline starts next.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::janus::Janus;
use common::{ports, wait_for, Agent};

const SECRET: &str = "priority-secret";

/// The nice value the microphone's threads ask for.
const NICE: i64 = -10;

/// Close-and-open rounds: each hands the pooled threads around again.
const ROUNDS: usize = 3;

/// One thread of a process, as `/proc/<pid>/task/<tid>/stat` shows it.
#[derive(Debug)]
struct Thread {
    /// Its name: GStreamer names a streaming thread after its task
    /// (`<element>:<pad>`, cut to 15 characters).
    comm: String,
    nice: i64,
}

/// The threads of process `pid` now (those that end while read are left out).
fn threads(pid: u32) -> Vec<Thread> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let stat = fs::read_to_string(task.path().join("stat")).ok()?;
            // "tid (comm) state ppid ...": comm may hold spaces and
            // parentheses, the fields after the last ')' do not; nice is
            // field 19, the 17th after comm.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
            Some(Thread { comm, nice })
        })
        .collect()
}

/// The threads of `pid` at [`NICE`].
fn raised(pid: u32) -> Vec<Thread> {
    threads(pid)
        .into_iter()
        .filter(|t| t.nice == NICE)
        .collect()
}

/// Whether this test process may give a thread nice [`NICE`] (root, or
/// `RLIMIT_NICE`): the agent it starts may then too.
fn may_raise() -> bool {
    std::thread::spawn(|| {
        // SAFETY: changes the priority of this short-lived thread only.
        let tid = unsafe { libc::gettid() };
        let who = libc::id_t::try_from(tid).unwrap_or_default();
        unsafe { libc::setpriority(libc::PRIO_PROCESS, who, NICE as i32) == 0 }
    })
    .join()
    .unwrap_or(false)
}

/// The agent: camera and microphone on test sources, no speaker, no
/// recorder, so that the two pipelines' streaming threads are the only
/// ones GStreamer's pool hands around.
fn config(janus: &Janus, room: u64) -> String {
    format!(
        r#"{head}
[speaker]
enabled = false
{video}
[microphone]
device = "test"
"#,
        head = common::config_head(
            &janus.url(),
            room,
            SECRET,
            ports(3),
            common::Extra::default()
        ),
        video = common::small_video("test"),
    )
}

/// Waits until `needle` is in the agent's log `count` times.
fn wait_logged(agent: &Agent, needle: &str, count: usize) {
    wait_for(Duration::from_secs(20), needle, || {
        (agent.log().matches(needle).count() >= count).then_some(())
    });
}

/// While both pipelines run: the microphone's source thread (the test
/// source's task, `audiotestsrcN:src`) alone at [`NICE`], where allowed,
/// and the camera's (`videotestsrcN:src`) at its own, watched for 2 s.
fn only_the_microphone_raised(pid: u32, allowed: bool) {
    let expected = usize::from(allowed);
    wait_for(Duration::from_secs(10), "the microphone's thread", || {
        let all = threads(pid);
        let mic = all.iter().find(|t| t.comm.starts_with("audiotestsrc"))?;
        let camera = all.iter().any(|t| t.comm.starts_with("videotestsrc"));
        (camera && (mic.nice == NICE) == allowed).then_some(())
    });
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let raised = raised(pid);
        assert_eq!(
            raised.len(),
            expected,
            "threads at nice {NICE} (the microphone's source thread alone expected): {raised:?}"
        );
        assert!(
            raised.iter().all(|t| t.comm.starts_with("audiotestsrc")),
            "a thread that is not the microphone's at nice {NICE}: {raised:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Once the pipelines have stopped (the room closed): no thread left at
/// [`NICE`], the pooled ones waiting for their next task included; watched
/// for 2 s, while the pool keeps idle threads for 15 s.
fn none_raised(pid: u32) {
    wait_for(
        Duration::from_secs(2),
        "the microphone's thread to leave",
        || raised(pid).is_empty().then_some(()),
    );
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let raised = raised(pid);
        assert!(
            raised.is_empty(),
            "threads at nice {NICE} with the microphone stopped: {raised:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn only_the_microphones_threads_run_at_nice_minus_10_and_give_it_back() {
    let _cores = common::shared();
    let janus = Janus::start();
    let agent = Agent::start(&config(&janus, 610));
    let allowed = may_raise();
    for round in 1..=ROUNDS {
        wait_logged(&agent, "microphone pipeline: running", round);
        wait_logged(&agent, "video pipeline: running", round);
        only_the_microphone_raised(agent.pid(), allowed);
        let (status, _, err) = agent.control(&["close"]);
        assert!(status.success(), "close: {err}");
        wait_logged(&agent, "microphone pipeline: stopped", round);
        wait_logged(&agent, "video pipeline: stopped", round);
        none_raised(agent.pid());
        let (status, _, err) = agent.control(&["open"]);
        assert!(status.success(), "open: {err}");
    }
    if !allowed {
        assert!(agent.log().contains("its threads keep their priority"));
    }
}
