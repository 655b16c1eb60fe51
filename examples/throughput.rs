//! One-way direct-send throughput on loopback, and an RPC round-trip latency probe: a quick
//! look at the numbers (the side-by-side comparison is `cargo bench --bench compare`).
//!
//! Run: `cargo run --release --example throughput -- [MESSAGES] [SIZE]`
//! (defaults: 2000000 messages of 64 bytes).

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use syncpeer::{Bytes, DisconnectReason, Inbound, Peer, PeerId, ProtocolId};

const P: ProtocolId = ProtocolId(2);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let messages = args.next().transpose()?.unwrap_or(2_000_000);
    let size = args.next().transpose()?.unwrap_or(64);

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    // Unbounded: the count measures the connection, not a handler that fell behind.
    let (tx, rx) = crossbeam_channel::unbounded();
    let receiver = Peer::builder(server)
        .remote_peer_id(PeerId::from_u64(1))
        .handler(P, tx.clone())
        .handler(ProtocolId(0), tx)
        .spawn()?;
    let sender = Peer::builder(client)
        .remote_peer_id(PeerId::from_u64(2))
        .spawn()?;

    let payload = Bytes::from(vec![7u8; size]);
    let counter = std::thread::spawn(move || {
        let mut n = 0usize;
        while n < messages {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Inbound::Message { .. }) => n += 1,
                Ok(Inbound::Request {
                    data, responder, ..
                }) => {
                    responder.respond(data).expect("respond");
                }
                Err(_) => break,
            }
        }
        (n, rx)
    });
    let start = Instant::now();
    for _ in 0..messages {
        sender.send(P, payload.clone())?;
    }
    let (received, rx) = counter.join().expect("counter thread");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{received} x {size} B in {secs:.3} s: {:.0} msg/s, {:.1} MB/s",
        received as f64 / secs,
        (received * size) as f64 / secs / 1e6
    );
    let r = receiver.metrics();
    if r.dropped_handler_full > 0 {
        println!(
            "receiver: {} messages dropped because the handler channel was full \
             (the counting thread fell behind)",
            r.dropped_handler_full
        );
    }
    let m = sender.metrics();
    println!(
        "sender: {} write calls, {} batches, {:.1} messages per write",
        m.write_calls,
        m.write_batches,
        m.messages_written as f64 / m.write_calls.max(1) as f64
    );

    // RPC round trips, closed loop, answered by a thread on the receiving side.
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
                .rpc(
                    ProtocolId(0),
                    Bytes::from_static(&[0; 64]),
                    Duration::from_secs(5),
                )
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
    sender.shutdown(DisconnectReason::RequestedByPeerManager);
    drop(receiver);
    let _ = server.join();
    Ok(())
}
