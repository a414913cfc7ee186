//! Rank 0 hands a byte string (the NCCL unique id) to every other rank over TCP.
//!
//! Used when no MPI launcher can carry it: torchrun-style jobs and Kubernetes Indexed Jobs,
//! where rank 0 is reached as `MASTER_ADDR:MASTER_PORT` (a headless Service name, for example).
//! Rank 0 listens on all interfaces at `MASTER_PORT` until every rank has fetched the payload.
//! The others retry with backoff, up to the deadline, while rank 0's name does not resolve yet
//! (its pod is not ready) or it does not accept yet (it has not started). Each rank announces its
//! rank and world size; rank 0 refuses a disagreeing world size or a duplicate rank 0, and both
//! sides then fail with the reason. The payload is opaque, so this is testable without a GPU.
//!
//! Wire format (little endian): request `b"WAVECOMM"`, version `u32`, rank `u32`, world size
//! `u32`; reply status `u8` (0 = payload, 1 = refusal), length `u32`, bytes.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::Error;

const MAGIC: &[u8; 8] = b"WAVECOMM";
const VERSION: u32 = 1;
/// Replies larger than this are garbage (NCCL ids are 128 bytes).
const MAX_PAYLOAD: u32 = 1 << 20;
/// Per-connection I/O limit on rank 0, so one stuck client cannot hold up the others for long.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Returns rank 0's `payload` on every rank (other ranks' `payload` is ignored). `master` is rank
/// 0's `(host, port)`; gives up after `timeout`.
pub fn exchange(
    master: &(String, u16),
    rank: usize,
    world_size: usize,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let deadline = Instant::now() + timeout;
    let err = |reason: String| Error::Rendezvous {
        rank,
        addr: format!("{}:{}", master.0, master.1),
        reason,
    };
    if world_size <= 1 {
        return Ok(payload.to_vec());
    }
    if rank == 0 {
        serve(master.1, world_size, payload, deadline).map_err(err)?;
        return Ok(payload.to_vec());
    }
    fetch(master, rank, world_size, deadline, timeout).map_err(err)
}

/// Rank 0: answers every other rank once, or fails naming the ranks that never came.
fn serve(port: u16, world_size: usize, payload: &[u8], deadline: Instant) -> Result<(), String> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut served = vec![false; world_size];
    served[0] = true;
    while served.contains(&false) {
        if Instant::now() >= deadline {
            let missing: Vec<usize> = (0..world_size).filter(|&r| !served[r]).collect();
            return Err(format!("ranks {missing:?} did not connect in time"));
        }
        match listener.accept() {
            Ok((stream, peer)) => match answer(stream, world_size, payload) {
                Ok(Some(r)) => served[r] = true,
                Ok(None) => {
                    tracing::debug!(%peer, "rendezvous: ignored a connection that is not a wave-comm rank")
                }
                Err(refusal) => return Err(refusal),
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    Ok(())
}

/// Reads one request and replies. `Ok(Some(rank))`: served; `Ok(None)`: not a rank (or it went
/// away; it will retry); `Err`: a rank of another job shape, refused and fatal.
fn answer(
    mut stream: TcpStream,
    world_size: usize,
    payload: &[u8],
) -> Result<Option<usize>, String> {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    let mut hello = [0u8; 20];
    if setup.is_err() || stream.read_exact(&mut hello).is_err() || &hello[..8] != MAGIC {
        return Ok(None);
    }
    let word = |i: usize| u32::from_le_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]]);
    let (version, rank, world) = (word(8), word(12) as usize, word(16) as usize);
    let refusal = if version != VERSION {
        Some(format!(
            "rank {rank} speaks rendezvous version {version}, rank 0 speaks {VERSION}"
        ))
    } else if world != world_size {
        Some(format!(
            "rank {rank} was started with world size {world}, rank 0 with {world_size}"
        ))
    } else if rank == 0 || rank >= world_size {
        Some(format!("a process claiming rank {rank} connected (world size {world_size}); two jobs share this address?"))
    } else {
        None
    };
    let (status, body) = match &refusal {
        Some(msg) => (1u8, msg.as_bytes()),
        None => (0u8, payload),
    };
    let mut reply = vec![status];
    reply.extend_from_slice(&(body.len() as u32).to_le_bytes());
    reply.extend_from_slice(body);
    let sent = stream.write_all(&reply).and_then(|()| stream.flush());
    match (refusal, sent) {
        (Some(msg), _) => Err(msg),
        (None, Ok(())) => Ok(Some(rank)),
        (None, Err(_)) => Ok(None),
    }
}

/// What rank 0 answered.
enum Reply {
    Payload(Vec<u8>),
    Refused(String),
}

/// Other ranks: retries until rank 0 answers or the deadline passes.
fn fetch(
    master: &(String, u16),
    rank: usize,
    world_size: usize,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let (mut attempts, mut backoff, mut last) = (0u32, Duration::from_millis(100), String::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "gave up after {attempts} attempts in {:.0} s; last: {last}",
                timeout.as_secs_f64()
            ));
        }
        attempts += 1;
        match try_fetch(master, rank, world_size, left) {
            Ok(Reply::Payload(p)) => {
                if attempts > 1 {
                    tracing::info!(rank, attempts, "rendezvous: reached rank 0");
                }
                return Ok(p);
            }
            Ok(Reply::Refused(reason)) => return Err(format!("rank 0 refused: {reason}")),
            Err(e) => {
                if attempts == 1 {
                    tracing::info!(rank, host = %master.0, port = master.1, error = %e, "rendezvous: waiting for rank 0");
                }
                last = e;
            }
        }
        std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One attempt: resolve, connect, ask, read the reply.
fn try_fetch(
    master: &(String, u16),
    rank: usize,
    world_size: usize,
    left: Duration,
) -> Result<Reply, String> {
    let (host, port) = (master.0.as_str(), master.1);
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut stream = None;
    let mut errors = Vec::new();
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, left.min(Duration::from_secs(2))) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    let mut stream =
        stream.ok_or_else(|| format!("cannot connect to {host}:{port} ({})", errors.join("; ")))?;
    let io = |e: std::io::Error| format!("talking to {host}:{port}: {e}");
    stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(io)?;
    let mut hello = MAGIC.to_vec();
    for word in [VERSION, rank as u32, world_size as u32] {
        hello.extend_from_slice(&word.to_le_bytes());
    }
    stream.write_all(&hello).map_err(io)?;
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).map_err(io)?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_PAYLOAD {
        return Err(format!(
            "{host}:{port} sent a {len}-byte reply; is it a wave-comm rank 0?"
        ));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).map_err(io)?;
    Ok(match head[0] {
        0 => Reply::Payload(body),
        _ => Reply::Refused(String::from_utf8_lossy(&body).into_owned()),
    })
}
