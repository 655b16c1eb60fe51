//! The workloads on syncpeer: two peers over loopback TCP, the application on plain threads;
//! in plaintext, or inside a Noise IK session established on the pair before the peers start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use syncpeer::noise::{
    AuthMode, CLIENT_MESSAGE_LEN, Initiator, NoiseConfig, NoiseSession, Responder,
    SERVER_MESSAGE_LEN, StaticKeypair, TrustedPeers,
};
use syncpeer::{
    Bytes, DisconnectReason, Handler, Inbound, Peer, PeerBuilder, PeerConfig, PeerHandle, PeerId,
    ThreadTuning,
};

use crate::common::{
    DIRECT, Kind, RPC, RPC_TIMEOUT, ShutdownRun, Trips, histogram, payload, record, tcp_pair,
};

/// One side: its handle and what its handlers receive (an unbounded channel, so the bench
/// never drops a message).
struct Side {
    handle: PeerHandle,
    inbound: Receiver<Inbound>,
}

fn side(builder: PeerBuilder, remote: u64, config: PeerConfig) -> Side {
    let (tx, inbound) = crossbeam_channel::unbounded();
    let handle = builder
        .config(config)
        .remote_peer_id(PeerId::from_u64(remote))
        .handler(DIRECT, tx.clone())
        .handler(RPC, tx)
        .spawn()
        .expect("spawn syncpeer");
    Side { handle, inbound }
}

fn pair(config_a: PeerConfig, noise: bool) -> (Side, Side) {
    pair_with(config_a, PeerConfig::default(), noise)
}

fn pair_with(config_a: PeerConfig, config_b: PeerConfig, noise: bool) -> (Side, Side) {
    let (a, b) = builders(noise);
    (side(a, 2, config_a), side(b, 1, config_b))
}

/// The tuned side's `ThreadTuning` for every thread of the path (both peers' and the
/// application's): the real-time policy `SCHED_FIFO` at priority 1 when the process may use it
/// (the bench says so when it may not), and the shortest slice the kernel grants, which is what
/// applies without the privilege.
fn tuning() -> ThreadTuning {
    ThreadTuning {
        realtime: Some(1),
        ..ThreadTuning::low_latency()
    }
}

/// Applies [`tuning`] to the calling thread, falling back to the slice alone without the
/// privilege for the real-time policy.
fn tune_current_thread(what: &str) {
    if tuning().apply_to_current_thread().is_err()
        && let Err(e) = ThreadTuning::low_latency().apply_to_current_thread()
    {
        eprintln!("{what}: tuning refused: {e}");
    }
}

/// Builders on the two ends of a loopback pair, inside a Noise session if `noise`.
fn builders(noise: bool) -> (PeerBuilder, PeerBuilder) {
    let (a, b) = tcp_pair();
    if !noise {
        return (Peer::builder(a), Peer::builder(b));
    }
    let (sa, sb) = handshake(&a, &b);
    (Peer::builder(a).noise(sa), Peer::builder(b).noise(sb))
}

/// A Noise IK handshake between the two ends of a connection, on this thread (both messages
/// fit the socket buffers): `a` dials. Mutual authentication, each trusting the other.
fn handshake(a: &TcpStream, b: &TcpStream) -> (NoiseSession, NoiseSession) {
    let (ka, kb) = (
        StaticKeypair::from_private_bytes([0xa1; 32]),
        StaticKeypair::from_private_bytes([0xb2; 32]),
    );
    let (ia, ib) = (PeerId::from_u64(1), PeerId::from_u64(2));
    let trusted: TrustedPeers = [(ia, [ka.public_key()]), (ib, [kb.public_key()])]
        .into_iter()
        .collect();
    let pb = kb.public_key();
    let ca = NoiseConfig::new(ka, ia, AuthMode::Mutual, trusted.clone());
    let cb = NoiseConfig::new(kb, ib, AuthMode::Mutual, trusted);
    let mut init = Initiator::new(&ca, ib, pb, std::time::SystemTime::now()).expect("initiator");
    (&*a)
        .write_all(init.first_message())
        .expect("client message");
    let mut msg = [0u8; CLIENT_MESSAGE_LEN];
    (&*b).read_exact(&mut msg).expect("client message");
    let mut responder = Responder::new(&cb);
    responder.read(&msg);
    let accepted = responder.accept().expect("accepted");
    (&*b).write_all(&accepted.response).expect("answer");
    let mut answer = [0u8; SERVER_MESSAGE_LEN];
    (&*a).read_exact(&mut answer).expect("answer");
    init.read(&answer);
    (init.finish().expect("session"), accepted.session)
}

/// Echoes direct sends and answers requests with their payload until the peer closes.
fn echo(b: Side) -> thread::JoinHandle<()> {
    echo_on(b, false)
}

/// [`echo`], on a thread tuned with [`tuning`] if `tuned`.
fn echo_on(b: Side, tuned: bool) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        if tuned {
            tune_current_thread("echo thread");
        }
        while let Ok(m) = b.inbound.recv() {
            match m {
                Inbound::Message { data, .. } => {
                    if b.handle.send(DIRECT, data).is_err() {
                        break;
                    }
                }
                Inbound::Request {
                    data, responder, ..
                } => {
                    let _ = responder.respond(data);
                }
            }
        }
    })
}

/// Closed-loop round trips; the first `warmup` are not recorded. Over Noise if `noise`.
pub(crate) fn latency(kind: Kind, size: usize, trips: Trips, noise: bool) -> Histogram<u64> {
    let (a, b) = pair(PeerConfig::default(), noise);
    let server = echo(b);
    round_trips(a, server, kind, size, trips)
}

/// [`latency`] with [`tuning`] on both peers' threads, the echo thread and the calling
/// thread (a thread of its own, so that the bench's main thread stays untuned).
pub(crate) fn latency_tuned(kind: Kind, size: usize, trips: Trips) -> Histogram<u64> {
    thread::spawn(move || {
        tune_current_thread("client thread");
        let config = PeerConfig {
            threads: tuning(),
            ..PeerConfig::default()
        };
        let (a, b) = pair_with(config.clone(), config, false);
        let server = echo_on(b, true);
        round_trips(a, server, kind, size, trips)
    })
    .join()
    .expect("tuned client thread")
}

fn round_trips(
    a: Side,
    server: thread::JoinHandle<()>,
    kind: Kind,
    size: usize,
    trips: Trips,
) -> Histogram<u64> {
    let data = payload(size);
    let mut h = histogram();
    let started = Instant::now();
    for i in (0..).take_while(|&i| trips.go_on(i, started)) {
        let start = Instant::now();
        match kind {
            Kind::Direct => {
                a.handle.send(DIRECT, data.clone()).expect("send");
                a.inbound.recv().expect("echo");
            }
            Kind::Rpc => {
                a.handle.rpc(RPC, data.clone(), RPC_TIMEOUT).expect("rpc");
            }
        }
        if trips.records(i) {
            record(&mut h, start);
        }
    }
    a.handle
        .shutdown(DisconnectReason::RequestedByPeerManager)
        .unwrap();
    server.join().expect("echo thread");
    h
}

/// Counts `count` messages on `inbound`; returns when the last arrived.
fn count(inbound: Receiver<Inbound>, count: usize) -> thread::JoinHandle<Instant> {
    thread::spawn(move || {
        for _ in 0..count {
            inbound.recv().expect("message");
        }
        Instant::now()
    })
}

/// Sends `n` messages of `size` bytes on `a`, waits for `done` (when the remote has them all),
/// closes `a` and returns the seconds from the first send to `done`.
fn blast(a: &PeerHandle, size: usize, n: usize, done: impl FnOnce() -> Instant) -> f64 {
    let data = payload(size);
    let start = Instant::now();
    for _ in 0..n {
        a.send(DIRECT, data.clone()).expect("send");
    }
    let done = done();
    a.shutdown(DisconnectReason::RequestedByPeerManager)
        .unwrap();
    (done - start).as_secs_f64()
}

/// One-way direct sends of `n` messages of `size` bytes: seconds until the remote has all.
/// Over Noise if `noise`.
pub(crate) fn throughput(size: usize, n: usize, noise: bool) -> f64 {
    let (a, b) = pair(PeerConfig::default(), noise);
    let counter = count(b.inbound, n);
    let secs = blast(&a.handle, size, n, || {
        counter.join().expect("counter thread")
    });
    b.handle.join().unwrap();
    secs
}

/// Like [`throughput`], the receiving side counting in an inline handler on its reader thread
/// instead of a thread reading a channel.
pub(crate) fn throughput_inline(size: usize, n: usize) -> f64 {
    let (a, b) = builders(false);
    let a = side(a, 2, PeerConfig::default());
    let counted = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let count = counted.clone();
    let b = b
        .remote_peer_id(PeerId::from_u64(1))
        .handler(
            DIRECT,
            Handler::inline(move |_| {
                if count.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    let _ = done_tx.try_send(Instant::now());
                }
            }),
        )
        .spawn()
        .expect("spawn syncpeer");
    let secs = blast(&a.handle, size, n, || {
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("every message counted within a minute")
    });
    b.join().unwrap();
    secs
}

/// Slots of the channel in [`throughput_blocking`]: bounded, as a blocking handler's is meant
/// to be, and as many as the outbox holds.
const BLOCKING_CAPACITY: usize = 1024;

/// Like [`throughput`], the receiving side's handler a `Handler::blocking` channel of
/// [`BLOCKING_CAPACITY`] slots (row "64 B, blocking handler"), next to the "64 B" row's
/// dropping handler on an unbounded channel: while the counting thread keeps up the channel
/// has room and the handler costs what the dropping one does; when it falls behind, the reader
/// waits for room instead of dropping, and every message still arrives.
pub(crate) fn throughput_blocking(size: usize, n: usize) -> f64 {
    let (a, b) = builders(false);
    let a = side(a, 2, PeerConfig::default());
    let (tx, inbound) = crossbeam_channel::bounded(BLOCKING_CAPACITY);
    let b = b
        .remote_peer_id(PeerId::from_u64(1))
        .handler(DIRECT, Handler::blocking(tx))
        .spawn()
        .expect("spawn syncpeer");
    let counter = count(inbound, n);
    let secs = blast(&a.handle, size, n, || {
        counter.join().expect("counter thread")
    });
    let report = b.join().unwrap();
    assert!(report.receive_drops.is_empty(), "{report:?}");
    secs
}

/// Queues `n` messages of `size` bytes (the outbox holds them all), then closes gracefully.
pub(crate) fn shutdown(size: usize, n: usize) -> ShutdownRun {
    let config = PeerConfig {
        outbox_capacity: n,
        ..PeerConfig::default()
    };
    let (a, b) = pair(config, false);
    let inbound = b.inbound;
    let counter = thread::spawn(move || {
        let mut received = 0u64;
        let mut last = Instant::now();
        // Disconnected once the remote's threads have ended.
        while inbound.recv().is_ok() {
            received += 1;
            last = Instant::now();
        }
        (received, last)
    });
    let data: Bytes = payload(size);
    let start = Instant::now();
    for _ in 0..n {
        a.handle.send(DIRECT, data.clone()).expect("send");
    }
    let queued_at_close = a.handle.metrics().outbox_depth;
    let close = Instant::now();
    let report = a
        .handle
        .shutdown(DisconnectReason::RequestedByPeerManager)
        .unwrap();
    let closed = Instant::now();
    let (received, last) = counter.join().expect("counter thread");
    ShutdownRun {
        accepted: report.messages_accepted,
        received,
        queued_at_close,
        close: closed - close,
        total: last.saturating_duration_since(start),
    }
}
