//! One-way direct-send throughput on loopback, received two ways (a thread reading the
//! handler's channel, and an inline handler on the reader thread), then an RPC round-trip
//! latency probe: a quick look at the numbers (the side-by-side comparison is
//! `cargo bench --bench compare`).
//!
//! Run: `cargo run --release --example throughput -- [MESSAGES] [SIZE]`
//! (defaults: 2000000 messages of 64 bytes).

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use syncpeer::{Bytes, DisconnectReason, Handler, Inbound, Peer, PeerHandle, PeerId, ProtocolId};

const P: ProtocolId = ProtocolId(2);
const RPC: ProtocolId = ProtocolId(0);

fn connected() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
}

/// Sends `messages` payloads from this thread; `received` blocks until the remote has all
/// of them and returns how many it counted.
fn blast(
    sender: &PeerHandle,
    messages: usize,
    size: usize,
    received: impl FnOnce() -> usize,
    how: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let payload = Bytes::from(vec![7u8; size]);
    let start = Instant::now();
    for _ in 0..messages {
        sender.send(P, payload.clone())?;
    }
    let n = received();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{how}: {n} x {size} B in {secs:.3} s: {:.0} msg/s, {:.1} MB/s",
        n as f64 / secs,
        (n * size) as f64 / secs / 1e6
    );
    let m = sender.metrics();
    println!(
        "  sender: {} write calls, {:.1} messages per write, {:.1} batches per write",
        m.write_calls,
        m.messages_written as f64 / m.write_calls.max(1) as f64,
        m.write_batches as f64 / m.write_calls.max(1) as f64
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let messages = args.next().transpose()?.unwrap_or(2_000_000);
    let size = args.next().transpose()?.unwrap_or(64);

    // 1. A thread counts what the handler's channel delivers. Unbounded: the count measures
    //    the connection and the hand-off, not a handler that fell behind.
    let (client, server) = connected()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let receiver = Peer::builder(server)
        .remote_peer_id(PeerId::from_u64(1))
        .handler(P, tx.clone())
        .handler(RPC, tx)
        .spawn()?;
    let sender = Peer::builder(client)
        .remote_peer_id(PeerId::from_u64(2))
        .spawn()?;
    let counter = {
        let rx = rx.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while n < messages && rx.recv_timeout(Duration::from_secs(10)).is_ok() {
                n += 1;
            }
            n
        })
    };
    let received = || counter.join().expect("counter thread");
    blast(&sender, messages, size, received, "channel handler")?;

    // The RPC probe on the same pair: closed loop, answered by a thread on the receiving side.
    let server = std::thread::spawn(move || {
        while let Ok(Inbound::Request {
            data, responder, ..
        }) = rx.recv_timeout(Duration::from_secs(2))
        {
            let _ = responder.respond(data);
        }
    });
    let mut rtts: Vec<Duration> = (0..2_000)
        .map(|_| {
            let t = Instant::now();
            sender
                .rpc(RPC, Bytes::from_static(&[0; 64]), Duration::from_secs(5))
                .expect("rpc");
            t.elapsed()
        })
        .collect();
    rtts.sort();
    println!(
        "rpc round trip: p50 {:?}, p99 {:?}",
        rtts[rtts.len() / 2],
        rtts[rtts.len() * 99 / 100]
    );
    sender
        .shutdown(DisconnectReason::RequestedByPeerManager)
        .unwrap();
    receiver.join().unwrap();
    let _ = server.join();

    // 2. The receiving peer counts on its own reader thread: no hand-off to another thread.
    let (client, server) = connected()?;
    let count = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let counted = count.clone();
    let receiver = Peer::builder(server)
        .remote_peer_id(PeerId::from_u64(1))
        .handler(
            P,
            Handler::inline(move |_| {
                if counted.fetch_add(1, Ordering::Relaxed) + 1 == messages {
                    let _ = done_tx.try_send(());
                }
            }),
        )
        .spawn()?;
    let sender = Peer::builder(client)
        .remote_peer_id(PeerId::from_u64(2))
        .spawn()?;
    let received = || {
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
        count.load(Ordering::Relaxed)
    };
    blast(&sender, messages, size, received, "inline handler")?;
    sender
        .shutdown(DisconnectReason::RequestedByPeerManager)
        .unwrap();
    receiver.join().unwrap();
    Ok(())
}
