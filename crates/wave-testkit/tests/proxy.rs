//! The fault proxy against a small real HTTP server on loopback: every fault does what its name
//! says, and changing the fault cuts connections that are already open.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wave_testkit::{Fault, FaultProxy};

/// An HTTP/1.1 server that answers every request with `200 OK` and the request's body, keeping
/// connections alive; counts the requests it answered.
struct Upstream {
    addr: String,
    served: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let served = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&served);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let count = Arc::clone(&count);
                std::thread::spawn(move || echo(stream, &count));
            }
        });
        Upstream { addr, served }
    }
}

fn echo(mut stream: TcpStream, served: &AtomicUsize) {
    loop {
        let Some((head, body)) = read_message(&mut stream) else {
            return;
        };
        assert!(
            head.starts_with("PUT ") || head.starts_with("GET "),
            "{head}"
        );
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        served.fetch_add(1, Ordering::SeqCst);
        if stream.write_all(reply.as_bytes()).is_err() || stream.write_all(&body).is_err() {
            return;
        }
    }
}

/// Reads one HTTP message (head, then a `Content-Length` body); `None` at end of stream.
fn read_message(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => data.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().expect("length"));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let s = TcpStream::connect(proxy.addr()).expect("connect to proxy");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

fn put(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    write!(
        stream,
        "PUT /bucket/key HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)
}

#[test]
fn no_fault_forwards_requests_and_responses_over_one_kept_alive_connection() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(&format!("http://{}", upstream.addr));
    let mut s = connect(&proxy);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for body in [&b"hello"[..], &big] {
        put(&mut s, body).expect("send");
        let (head, echoed) = read_message(&mut s).expect("reply");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(echoed, body, "the body made the round trip intact");
    }
    assert_eq!(
        (proxy.connections(), upstream.served.load(Ordering::SeqCst)),
        (1, 2)
    );
}

#[test]
fn latency_delays_each_direction_without_throttling() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(&upstream.addr);
    proxy.set(Fault::Latency(Duration::from_millis(300)));
    let mut s = connect(&proxy);
    let started = Instant::now();
    put(&mut s, b"ping").expect("send");
    read_message(&mut s).expect("reply");
    let small = started.elapsed();
    assert!(
        small >= Duration::from_millis(600),
        "a round trip crosses the delay twice: {small:?}"
    );
    // 8 MB arrive in many chunks; with a per-chunk pause instead of a delay this would take minutes.
    let big = vec![7u8; 8_000_000];
    let started = Instant::now();
    put(&mut s, &big).expect("send");
    let (_, echoed) = read_message(&mut s).expect("reply");
    assert_eq!(echoed.len(), big.len());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "throughput kept: {:?}",
        started.elapsed()
    );
}

#[test]
fn reset_fault_resets_the_connection_and_nothing_reaches_the_server() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(&upstream.addr);
    proxy.set(Fault::Reset);
    let mut s = connect(&proxy);
    put(&mut s, b"data").expect("send");
    let mut buf = [0u8; 64];
    let err = s.read(&mut buf).expect_err("the read must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(upstream.served.load(Ordering::SeqCst), 0);
}

#[test]
fn http_status_fault_answers_503_after_reading_the_whole_request() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(&upstream.addr);
    proxy.set(Fault::HttpStatus(503));
    let mut s = connect(&proxy);
    put(&mut s, &vec![1u8; 1_000_000]).expect("send a large body");
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .expect("a clean reply, then end of stream");
    assert!(
        reply.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{reply}"
    );
    assert!(reply.contains("<Code>ServiceUnavailable</Code>"), "{reply}");
    assert_eq!(upstream.served.load(Ordering::SeqCst), 0);
}

#[test]
fn blackhole_accepts_and_never_answers() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(&upstream.addr);
    proxy.set(Fault::Blackhole);
    let mut s = connect(&proxy);
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    put(&mut s, b"anyone there?").expect("sending succeeds: the connection is accepted");
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).expect_err("no answer");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert_eq!(
        (proxy.connections(), upstream.served.load(Ordering::SeqCst)),
        (1, 0)
    );
}

#[test]
fn changing_the_fault_cuts_open_connections_and_applies_to_new_ones() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(&upstream.addr);
    let mut pooled = connect(&proxy);
    put(&mut pooled, b"1").expect("send");
    read_message(&mut pooled).expect("reply");
    proxy.set(Fault::Blackhole);
    // The kept-alive connection ends (end of stream or reset) instead of bypassing the fault.
    let mut buf = [0u8; 16];
    let cut = match pooled.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected {n} bytes"),
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    };
    assert!(cut, "the open connection was cut");
    proxy.set(Fault::None);
    let mut fresh = connect(&proxy);
    put(&mut fresh, b"2").expect("send");
    assert!(
        read_message(&mut fresh).is_some(),
        "a new connection passes again"
    );
    fresh.shutdown(Shutdown::Both).expect("close");
    assert_eq!(upstream.served.load(Ordering::SeqCst), 2);
}
