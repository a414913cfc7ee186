//! [`FaultProxy`]: a TCP proxy on loopback that injects network and server faults between a client
//! (object_store, in the wave-dist tests) and a real server (SeaweedFS).
//!
//! The fault can be changed at any time with [`FaultProxy::set`]. It applies to connections
//! accepted afterwards; connections that are open at the change are cut (both directions shut
//! down), so a client's pooled keep-alive connection cannot slip past a new fault.
//!
//! ```no_run
//! use std::time::Duration;
//! use wave_testkit::{Fault, FaultProxy, Weed};
//! let Some(weed) = Weed::start() else { return };
//! let proxy = FaultProxy::start(&weed.endpoint);
//! // point the client at proxy.endpoint() instead of weed.endpoint
//! proxy.set(Fault::Latency(Duration::from_millis(200)));
//! proxy.set(Fault::Blackhole); // connections are accepted and never answered
//! proxy.set(Fault::None);
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often blocked connection threads look at the fault and the shutdown flag.
const TICK: Duration = Duration::from_millis(50);
/// Bytes read from a socket at a time.
const CHUNK: usize = 64 * 1024;
/// Longest HTTP request head (request line and headers) read before answering with a status.
const MAX_HEAD: usize = 64 * 1024;

/// What the proxy does to a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward bytes both ways unchanged.
    None,
    /// Forward, but every byte arrives this much later (both directions), as on a long link;
    /// throughput is unchanged.
    Latency(Duration),
    /// Accept, wait for the client's first bytes, then reset the connection (TCP RST).
    Reset,
    /// Answer every request with this HTTP status (for example 503) and an S3-style error body,
    /// then close; nothing reaches the server.
    HttpStatus(u16),
    /// Accept and never answer: read and discard whatever the client sends, keep the connection
    /// open until the client gives up or the fault changes.
    Blackhole,
}

struct Shared {
    fault: Mutex<Fault>,
    /// Bumped by every [`FaultProxy::set`]; a connection started under another generation ends.
    generation: AtomicU64,
    shutdown: AtomicBool,
    accepted: AtomicUsize,
}

impl Shared {
    fn current(&self) -> (Fault, u64) {
        let fault = self.fault.lock().unwrap_or_else(PoisonError::into_inner);
        (fault.clone(), self.generation.load(Ordering::SeqCst))
    }

    /// Whether a connection started under `generation` must end now.
    fn stale(&self, generation: u64) -> bool {
        self.shutdown.load(Ordering::SeqCst) || self.generation.load(Ordering::SeqCst) != generation
    }
}

/// A fault-injecting TCP proxy listening on `127.0.0.1`; stops (and cuts every connection) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`, or an `http://host:port` URL) with
    /// [`Fault::None`]. Panics when it cannot listen (a test set-up failure).
    pub fn start(upstream: &str) -> FaultProxy {
        let target = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream: SocketAddr = target
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("fault proxy: cannot resolve upstream {target:?}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fault proxy: non-blocking listener");
        let addr = listener.local_addr().expect("fault proxy: local address");
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            generation: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || accept_loop(&listener, upstream, &shared))
                .expect("fault proxy: accept thread")
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the fault: new connections get `fault`, open ones are cut.
    pub fn set(&self, fault: Fault) {
        *self
            .shared
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fault;
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // A panicked acceptor has nothing left to stop.
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let shared = Arc::clone(shared);
                let _ = std::thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || serve(client, upstream, &shared));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

/// One client connection under the fault current at its acceptance.
fn serve(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) {
    let (fault, generation) = shared.current();
    if client.set_nonblocking(false).is_err() || client.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    match fault {
        Fault::None => forward(client, upstream, Duration::ZERO, generation, shared),
        Fault::Latency(delay) => forward(client, upstream, delay, generation, shared),
        Fault::Reset => reset(client, generation, shared),
        Fault::HttpStatus(status) => answer(client, status, generation, shared),
        Fault::Blackhole => {
            let mut buf = vec![0u8; CHUNK];
            let _ = read_until_stale(&client, &mut buf, generation, shared, |_| false);
        }
    }
}

/// Reads chunks into `buf`, handing each to `done`, until `done` returns true (then returns
/// true), or the peer closes, a read fails or the connection goes stale (then false).
fn read_until_stale(
    mut stream: &TcpStream,
    buf: &mut [u8],
    generation: u64,
    shared: &Shared,
    mut done: impl FnMut(&[u8]) -> bool,
) -> bool {
    loop {
        if shared.stale(generation) {
            return false;
        }
        match stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if done(&buf[..n]) {
                    return true;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return false,
        }
    }
}

/// Waits for the client's first bytes and closes without reading them: with unread data in its
/// receive queue, the kernel answers the close with a RST.
fn reset(client: TcpStream, generation: u64, shared: &Shared) {
    let mut probe = [0u8; 1];
    while !shared.stale(generation) {
        match client.peek(&mut probe) {
            Ok(_) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
    drop(client);
}

/// Reads one HTTP request (head, and a body of `Content-Length` bytes) and answers `status`.
fn answer(client: TcpStream, status: u16, generation: u64, shared: &Shared) {
    let mut buf = vec![0u8; CHUNK];
    let mut head = Vec::new();
    let mut body_left: Option<usize> = None;
    let complete = read_until_stale(&client, &mut buf, generation, shared, |data| {
        match body_left.as_mut() {
            Some(left) => *left = left.saturating_sub(data.len()),
            None => {
                head.extend_from_slice(data);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let after = head.len() - (end + 4);
                    body_left = Some(content_length(&head[..end]).saturating_sub(after));
                } else if head.len() > MAX_HEAD {
                    body_left = Some(0);
                }
            }
        }
        body_left == Some(0)
    });
    if !complete {
        return;
    }
    let reason = match status {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>fault injected by wave-testkit</Message></Error>",
        reason.replace(' ', "")
    );
    let reply = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = &client;
    if stream
        .write_all(reply.as_bytes())
        .and_then(|()| stream.flush())
        .is_ok()
    {
        let _ = client.shutdown(Shutdown::Write);
        // Drain until the client closes, so that our close does not turn into a reset.
        let _ = read_until_stale(&client, &mut buf, generation, shared, |_| false);
    }
}

/// The `Content-Length` of a request head, 0 when absent.
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Pipes both directions through `delay`, until either side closes or the connection goes stale.
fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    delay: Duration,
    generation: u64,
    shared: &Arc<Shared>,
) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        return;
    };
    if server.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || pump(&client, &server, delay, generation, &shared))
    };
    pump(&server2, &client2, delay, generation, shared);
    let _ = up.join();
    let _ = client2.shutdown(Shutdown::Both);
    let _ = server2.shutdown(Shutdown::Both);
}

/// Copies `from` to `to`, each chunk `delay` after it was read (a writer thread keeps the pace,
/// so reading goes on meanwhile). Ends both sockets when the connection goes stale.
fn pump(from: &TcpStream, to: &TcpStream, delay: Duration, generation: u64, shared: &Arc<Shared>) {
    let Ok(mut sink) = to.try_clone() else {
        return;
    };
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            for (due, chunk) in rx {
                let wait = due.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                if shared.stale(generation) || sink.write_all(&chunk).is_err() {
                    return;
                }
            }
            // The reader saw end of stream: pass it on.
            let _ = sink.shutdown(Shutdown::Write);
        })
    };
    let mut buf = vec![0u8; CHUNK];
    read_until_stale(from, &mut buf, generation, shared, |data| {
        tx.send((Instant::now() + delay, data.to_vec())).is_err()
    });
    drop(tx);
    if shared.stale(generation) {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
    let _ = writer.join();
}
