//! The client against a hostile or broken Janus: malformed JSON, wrong
//! types, missing fields, huge bodies, silence and trickling replies.
//!
//! These tests use a fake HTTP server (a `std::net::TcpListener` on
//! 127.0.0.1), and that is deliberate: the project's rule that no mock of
//! Janus proves a feature is about features, which the integration tests
//! prove against a real Janus. A real Janus cannot be made to send a 64 MiB
//! reply or a truncated one; for hostile input a fake server is the right
//! tool. What is checked: the client never panics, never blocks past its
//! timeout, never reads more than [`MAX_REPLY_BYTES`] of a reply, blames a
//! bad reply on the reply (not on the connection), and stays usable.
//! (A long-poll is allowed Janus's 30 s hold on top of the timeout, so a
//! silent server is tried on ordinary requests only.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::audiobridge::{AudioBridge, ForwardTarget, RoomSpec};
use super::rooms::RoomPlugin;
use super::streaming::Streaming;
use super::*;
use crate::config::JanusSettings;

/// The client's request timeout in these tests.
const TIMEOUT: Duration = Duration::from_millis(400);
/// How much longer than its timeout a call may take (thread scheduling on a
/// busy 2-core machine, connection set-up).
const SLACK: Duration = Duration::from_millis(1500);

/// A request as the fake server saw it.
struct Request {
    /// The `transaction` of a POSTed body, if any.
    transaction: Option<String>,
}

/// Starts a fake server on 127.0.0.1 that answers each connection with
/// `respond` (on a thread of its own, so a stalling answer blocks nothing
/// else); returns the REST URL. The server lives as long as the test binary.
fn serve(respond: impl Fn(Request, TcpStream) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
    let url = format!(
        "http://{}/janus",
        listener.local_addr().expect("local address")
    );
    let respond = Arc::new(respond);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let respond = Arc::clone(&respond);
            thread::spawn(move || {
                if let Some(request) = read_request(&stream) {
                    respond(request, stream);
                }
            });
        }
    });
    url
}

/// Reads one HTTP request (headers and a Content-Length body).
fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length.min(1 << 16)];
    reader.read_exact(&mut body).ok()?;
    let transaction = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("transaction")?.as_str().map(str::to_owned));
    Some(Request { transaction })
}

/// A complete HTTP/1.1 response with `body`.
fn http(status: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn client(url: &str) -> Client {
    let settings = JanusSettings {
        url: url.to_owned(),
        request_timeout: TIMEOUT,
        ..JanusSettings::default()
    };
    Client::new(&settings).expect("no ca_file to read")
}

const HANDLE: Handle = Handle {
    session: SessionId(1),
    id: HandleId(2),
};

/// How many calls [`every_call`] makes.
const CALLS: usize = 9;

/// What one call of [`every_call`] came to.
struct Outcome {
    /// The call, e.g. `"attach"`.
    what: &'static str,
    result: Result<(), JanusError>,
}

/// Every call the agent makes, each bounded in time (a panic fails the test
/// binary, which is the point); returns what each came to.
fn every_call(client: &Client) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut timed = |what: &'static str, call: &mut dyn FnMut() -> Result<(), JanusError>| {
        let started = Instant::now();
        let result = call();
        let took = started.elapsed();
        assert!(
            took < TIMEOUT + SLACK,
            "{what} took {took:?} with a {TIMEOUT:?} timeout"
        );
        outcomes.push(Outcome { what, result });
    };
    timed("create_session", &mut || client.create_session().map(drop));
    timed("attach", &mut || {
        client.attach(SessionId(1), audiobridge::PLUGIN).map(drop)
    });
    timed("destroy_session", &mut || {
        client.destroy_session(SessionId(1))
    });
    let bridge = AudioBridge::new(client, HANDLE);
    let stream = Streaming::new(client, HANDLE);
    let room = RoomSpec {
        id: 1,
        description: "x",
        secret: None,
        pin: None,
        admin_key: None,
        allow_rtp_participants: false,
        record_dir: None,
        prebuffering: 2,
    };
    let target = ForwardTarget {
        host: std::net::IpAddr::from([127, 0, 0, 1]),
        port: 5000,
        payload_type: 100,
    };
    let mountpoint = super::streaming::tests::spec();
    timed("audiobridge create", &mut || bridge.create(&room).map(drop));
    timed("audiobridge exists", &mut || bridge.exists(1).map(drop));
    timed("rtp_forward", &mut || {
        bridge.rtp_forward(1, &target, None, None, None).map(drop)
    });
    timed("listforwarders", &mut || {
        bridge.list_forwarders(1, None).map(drop)
    });
    timed("streaming create", &mut || {
        stream.create(&mountpoint).map(drop)
    });
    timed("streaming info", &mut || stream.info(1, None).map(drop));
    outcomes
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    let bodies: Vec<&[u8]> = vec![
        b"",
        b"{",
        b"{\"janus\": \"succ",
        b"not json at all",
        b"\xff\xfe\x00garbage",
        b"null",
        b"[]",
        b"[1, 2, 3]",
        b"\"success\"",
        b"{}",
        b"{\"janus\": 5}",
        b"{\"janus\": \"success\"}",
        b"{\"janus\": \"success\", \"transaction\": 7}",
        b"{\"janus\": \"error\"}",
        b"{\"janus\": \"error\", \"error\": {\"code\": \"403\"}}",
        b"{\"janus\": \"error\", \"error\": {\"code\": 70000}}",
        b"{\"janus\": \"error\", \"error\": {\"code\": -1, \"reason\": []}}",
        b"{\"janus\": \"success\", \"data\": {\"id\": \"12\"}}",
        b"{\"janus\": \"success\", \"data\": {\"id\": -12}}",
        b"{\"janus\": \"success\", \"data\": {\"id\": 1.5e300}}",
        b"{\"janus\": \"success\", \"plugindata\": []}",
        b"{\"janus\": \"success\", \"plugindata\": {\"data\": {\"error_code\": \"x\"}}}",
        b"{\"janus\": \"success\", \"plugindata\": {\"data\": {\"error_code\": 99999999999}}}",
        b"{\"janus\": \"success\", \"plugindata\": {\"data\": {\"exists\": \"yes\"}}}",
        b"{\"janus\": \"success\", \"plugindata\": {\"data\": {\"rtp_forwarders\": {}}}}",
        b"{\"janus\": \"success\", \"plugindata\": {\"data\": {\"info\": {\"media\": [{\"type\": 1}]}}}}",
        b"{\"janus\": \"success\", \"plugindata\": {\"data\": {\"info\": {\"media\": [{\"type\": \"video\", \"port\": 70000}]}}}}",
        b"{\"janus\": \"success\", \"plugindata\": {\"data\": {\"stream_id\": -3}}}",
        b"{\"janus\":\"success\"}{\"janus\":\"success\"}",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ];
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(bodies.into_iter().map(<[u8]>::to_vec).collect());
    let next = Arc::new(AtomicU64::new(0));
    let (served, counter) = (Arc::clone(&bodies), Arc::clone(&next));
    let url = serve(move |request, mut stream| {
        let n = counter.load(Ordering::Relaxed) as usize;
        // Echo the transaction where the body has a placeholder-free object,
        // so the plugin paths past the transaction check are reached too.
        let mut body = served[n % served.len()].clone();
        if let (Ok(mut value), Some(tx)) =
            (serde_json::from_slice::<Value>(&body), request.transaction)
        {
            if let Some(map) = value.as_object_mut() {
                if !map.contains_key("transaction") {
                    map.insert("transaction".into(), tx.into());
                    body = value.to_string().into_bytes();
                }
            }
        }
        let _ = stream.write_all(&http("200 OK", &body));
    });
    let client = client(&url);
    let mut answers = Vec::new();
    for (n, body) in bodies.iter().enumerate() {
        next.store(n as u64, Ordering::Relaxed);
        let outcomes = every_call(&client);
        assert_eq!(outcomes.len(), CALLS);
        let shown = String::from_utf8_lossy(body);
        for Outcome { what, result } in &outcomes {
            if let Err(e) = result {
                assert!(blames_the_reply(e), "{shown}: {what}: {e:?}");
            }
            // Without an envelope, no call can take anything from the reply.
            if !has_envelope(body) {
                assert!(
                    matches!(result, Err(JanusError::Protocol(_))),
                    "{shown}: {what}: {result:?}"
                );
            }
        }
        answers.push((shown.into_owned(), outcomes));
    }
    // Asserts that `what` refused `body` with an error `as_expected` accepts.
    let refused = |body: &str, what: &str, as_expected: &dyn Fn(&JanusError) -> bool| {
        let (_, outcomes) = answers
            .iter()
            .find(|(shown, _)| shown == body)
            .expect("a body of the list");
        let outcome = outcomes.iter().find(|o| o.what == what).expect("a call");
        match &outcome.result {
            Err(e) => assert!(as_expected(e), "{what} on {body}: {e:?}"),
            Ok(()) => panic!("{what} took {body}"),
        }
    };
    // An error envelope without its details, or with a code out of range,
    // is not made a Janus error code.
    refused(
        "{\"janus\": \"error\"}",
        "attach",
        &|e| matches!(e, JanusError::Protocol(m) if m.contains("without error details")),
    );
    let code_out_of_range = "{\"janus\": \"error\", \"error\": {\"code\": 70000}}";
    refused(code_out_of_range, "create_session", &|e| {
        matches!(e, JanusError::Protocol(_))
    });
    // An id that is not a number is no id.
    let string_id = "{\"janus\": \"success\", \"data\": {\"id\": \"12\"}}";
    refused(
        string_id,
        "create_session",
        &|e| matches!(e, JanusError::Protocol(m) if m.starts_with("no id in")),
    );
    // A plugin error code beyond u16 stays an error of its plugin, clamped
    // (not wrapped round to a code that may mean "already gone").
    let huge_code =
        "{\"janus\": \"success\", \"plugindata\": {\"data\": {\"error_code\": 99999999999}}}";
    refused(huge_code, "audiobridge exists", &|e| {
        matches!(
            e,
            JanusError::Plugin {
                plugin: audiobridge::PLUGIN,
                code: u16::MAX,
                ..
            }
        )
    });
    // Nearly every call on nearly every body fails.
    let failed = answers
        .iter()
        .flat_map(|(_, outcomes)| outcomes)
        .filter(|o| o.result.is_err())
        .count();
    assert!(
        failed > bodies.len() * CALLS * 4 / 5,
        "only {failed} errors"
    );
}

/// Whether an error puts the fault in the reply (what Janus said) rather
/// than in reaching it (network, TLS, HTTP): a reply that was read, whatever
/// its content, must not be reported as "cannot reach Janus".
fn blames_the_reply(error: &JanusError) -> bool {
    matches!(
        error,
        JanusError::Protocol(_) | JanusError::Core { .. } | JanusError::Plugin { .. }
    )
}

/// Whether `body` is a JSON object whose `janus` is a string: the least a
/// reply needs before any call can use it.
fn has_envelope(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("janus").is_some_and(Value::is_string))
}

/// A random JSON value shaped like a Janus reply: the right keys with
/// values of any type, nested a few levels.
fn arbitrary(rng: &mut StdRng, depth: u32, transaction: &Option<String>) -> Value {
    const KEYS: &[&str] = &[
        "janus",
        "transaction",
        "data",
        "id",
        "error",
        "code",
        "reason",
        "plugindata",
        "plugin",
        "error_code",
        "exists",
        "stream_id",
        "rtp_forwarders",
        "info",
        "media",
        "type",
        "port",
        "age_ms",
        "ip",
        "ptype",
        "session_id",
        "sender",
    ];
    const WORDS: &[&str] = &[
        "success",
        "error",
        "keepalive",
        "ack",
        "event",
        "video",
        "audio",
        "",
        "ü",
        "\u{0}",
    ];
    let leaf = depth == 0 || rng.random_bool(0.4);
    match rng.random_range(0..if leaf { 7 } else { 9 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random::<u64>() >> rng.random_range(0..64)),
        3 => json!(-rng.random_range(0..i64::MAX)),
        4 => json!(rng.random::<f64>() * 1e20),
        5 => json!(WORDS[rng.random_range(0..WORDS.len())]),
        6 => match transaction {
            Some(tx) => json!(tx),
            None => json!("tx"),
        },
        7 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| arbitrary(rng, depth - 1, transaction))
                .collect(),
        ),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.random_range(0..6) {
                let key = KEYS[rng.random_range(0..KEYS.len())];
                map.insert(key.into(), arbitrary(rng, depth - 1, transaction));
            }
            Value::Object(map)
        }
    }
}

#[test]
fn random_replies_never_panic_or_hang() {
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(0x1a_2b_3c)));
    // Once set, the server answers as Janus does: is the client still usable?
    let sane = Arc::new(AtomicBool::new(false));
    let answer_sanely = Arc::clone(&sane);
    let url = serve(move |request, mut stream| {
        let value = if answer_sanely.load(Ordering::Relaxed) {
            json!({ "janus": "success", "transaction": request.transaction, "data": { "id": 7 } })
        } else {
            let mut rng = rng.lock().expect("rng lock");
            let mut value = arbitrary(&mut rng, 4, &request.transaction);
            // Mostly envelopes that pass the first checks, so deeper code runs.
            if rng.random_bool(0.7) {
                let mut envelope = Map::new();
                envelope.insert(
                    "janus".into(),
                    json!(["success", "error", "event"][rng.random_range(0..3)]),
                );
                if let Some(tx) = &request.transaction {
                    envelope.insert("transaction".into(), json!(tx));
                }
                for key in ["data", "plugindata", "error"] {
                    if rng.random_bool(0.5) {
                        envelope.insert(key.into(), arbitrary(&mut rng, 3, &request.transaction));
                    }
                }
                if rng.random_bool(0.5) {
                    envelope.insert("plugindata".into(), json!({ "data": value }));
                }
                value = Value::Object(envelope);
            }
            value
        };
        let _ = stream.write_all(&http("200 OK", value.to_string().as_bytes()));
    });
    let client = client(&url);
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..40 {
        outcomes.extend(every_call(&client));
    }
    let took = started.elapsed();
    let taken = outcomes.iter().filter(|o| o.result.is_ok()).count();
    println!(
        "{} calls on random replies in {took:?}, {taken} took the reply",
        outcomes.len()
    );
    // Every reply was read: an error may blame the reply, never the
    // connection (a call that hung until its timeout would be a transport
    // error), and calls answered at once take far less than their timeout
    // on average (a quarter of it: room for qemu on a loaded machine).
    for Outcome { what, result } in &outcomes {
        if let Err(e) = result {
            assert!(blames_the_reply(e), "{what}: {e:?}");
        }
    }
    let budget = TIMEOUT / 4 * u32::try_from(outcomes.len()).expect("few calls");
    assert!(took < budget, "{} calls took {took:?}", outcomes.len());
    // Some replies got past every check, so the code behind them ran too.
    assert!(taken > 0, "no call took any random reply");
    // The client is none the worse for it.
    sane.store(true, Ordering::Relaxed);
    assert_eq!(client.create_session().ok(), Some(SessionId(7)));
}

#[test]
fn huge_replies_are_cut_at_the_limit() {
    // Announces 64 MiB and sends as much as the client takes.
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let url = serve(move |_, mut stream| {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n{\"janus\":\"success\",\"data\":\"";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![b'a'; 64 * 1024];
        while stream.write_all(&chunk).is_ok() {
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if counter.load(Ordering::Relaxed) > 64 << 20 {
                break;
            }
        }
    });
    let client = client(&url);
    let started = Instant::now();
    let error = client
        .create_session()
        .expect_err("a 64 MiB reply is refused");
    assert!(error.to_string().contains("reply larger than"), "{error}");
    assert!(started.elapsed() < TIMEOUT + SLACK);
    // The client stopped reading: what the server got out is the limit plus
    // what the kernel's socket buffers hold, far from the 64 MiB announced.
    thread::sleep(Duration::from_millis(200));
    let out = sent.load(Ordering::Relaxed);
    println!(
        "the server got {} KiB out before the client hung up",
        out >> 10
    );
    assert!(out < 16 << 20, "{out} bytes were taken");
}

#[test]
fn an_endless_chunked_reply_is_cut_too() {
    let url = serve(|_, mut stream| {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 4096, "[".repeat(4096));
        while stream.write_all(chunk.as_bytes()).is_ok() {}
    });
    let client = client(&url);
    let started = Instant::now();
    let error = client.create_session().expect_err("refused");
    assert!(started.elapsed() < TIMEOUT + SLACK, "{error}");
}

#[test]
fn silent_and_trickling_servers_hit_the_timeout() {
    // Accepts, reads the request, says nothing.
    let silent = serve(|_, stream| {
        thread::sleep(Duration::from_secs(10));
        drop(stream);
    });
    // Answers one byte of a valid reply every 100 ms.
    let trickle = serve(|request, mut stream| {
        let body =
            json!({ "janus": "success", "transaction": request.transaction, "data": { "id": 1 } });
        for byte in http("200 OK", body.to_string().as_bytes()) {
            if stream.write_all(&[byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    // Sends headers, then stalls in the body.
    let stalled_body = serve(|_, mut stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"janus\":");
        thread::sleep(Duration::from_secs(10));
    });
    for url in [silent, trickle, stalled_body] {
        let client = client(&url);
        let started = Instant::now();
        let error = client.create_session().expect_err("no reply in time");
        let took = started.elapsed();
        assert!(took < TIMEOUT + SLACK, "{url}: {took:?}: {error}");
        assert!(
            !error.needs_operator(),
            "{error}: a timeout is retried quickly"
        );
    }
}

#[test]
fn broken_http_is_a_transport_or_http_error() {
    let garbage = serve(|_, mut stream| {
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    });
    let hang_up = serve(|_, stream| drop(stream));
    let server_error = serve(|_, mut stream| {
        let _ = stream.write_all(&http("500 Internal Server Error", b"<html>oops</html>"));
    });
    let redirect = serve(|_, mut stream| {
        let _ = stream.write_all(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/x\r\nContent-Length: 0\r\n\r\n",
        );
    });
    for url in [garbage, hang_up] {
        let error = client(&url).create_session().expect_err("refused");
        assert!(
            matches!(error, JanusError::Transport { .. }),
            "{url}: {error}"
        );
    }
    let error = client(&server_error).create_session().expect_err("refused");
    assert!(
        matches!(error, JanusError::Http { status: 500, .. }),
        "{error}"
    );
    // A redirect (which Janus never sends) is refused as HTTP 302, or,
    // followed to where it points (a closed port), fails to connect.
    let error = client(&redirect).create_session().expect_err("refused");
    let refused_there = |source: &ureq::Error| matches!(source, ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
    assert!(
        match &error {
            JanusError::Http { status, .. } => *status == 302,
            JanusError::Transport { source, .. } => refused_there(source),
            _ => false,
        },
        "{error:?}"
    );
}
