//! The audit report's scenario, on loopback: queue many votes, close at once, and check that
//! the remote received every one of them, in order, with nothing abandoned.
//!
//! Run: `cargo run --release --example drain -- [MESSAGES] [ROUNDS]`
//! (defaults: 100000 messages, 5 rounds).

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use syncpeer::{Bytes, DisconnectReason, Inbound, Peer, PeerId, ProtocolId};

const VOTES: ProtocolId = ProtocolId(1); // ConsensusDirectSendBcs in the original's numbering

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let messages = args.next().transpose()?.unwrap_or(100_000);
    let rounds = args.next().transpose()?.unwrap_or(5);
    let mut lost_total = 0;
    for round in 1..=rounds {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;

        // The receiving validator: an unbounded handler so that the count is exact.
        let (tx, rx) = crossbeam_channel::unbounded();
        let (dtx, drx) = crossbeam_channel::unbounded();
        let receiver = Peer::builder(server)
            .remote_peer_id(PeerId::from_u64(1))
            .handler(VOTES, tx)
            .on_disconnect(dtx)
            .spawn()?;
        let sender = Peer::builder(client)
            .remote_peer_id(PeerId::from_u64(2))
            .spawn()?;

        let start = Instant::now();
        for seq in 0..messages {
            // A 64-byte "vote": its sequence number, padded.
            let mut vote = [0u8; 64];
            vote[..8].copy_from_slice(&seq.to_be_bytes());
            sender.send(VOTES, Bytes::copy_from_slice(&vote))?;
        }
        let queued = start.elapsed();
        // Close at once, with votes still queued: the original's shutdown loses some here.
        let report = sender
            .shutdown(DisconnectReason::RequestedByPeerManager)
            .unwrap();

        let mut next = 0u64;
        while let Ok(Inbound::Message { data, .. }) = rx.recv_timeout(Duration::from_secs(10)) {
            let seq = u64::from_be_bytes(data[..8].try_into()?);
            assert_eq!(seq, next, "votes arrive in order");
            next += 1;
            if next == messages {
                break;
            }
        }
        let remote = drx.recv_timeout(Duration::from_secs(10))?;
        let lost = report.messages_accepted - next - report.messages_abandoned;
        lost_total += lost;
        println!(
            "round {round}: queued {messages} votes in {queued:.2?}; close took {:.2?}: \
             written {}, abandoned {}, delivered {next}, silently lost {lost}; remote saw {}",
            report.drain_duration,
            report.messages_written,
            report.messages_abandoned,
            remote.reason
        );
        drop(receiver);
    }
    println!("silently lost in total: {lost_total}");
    if lost_total > 0 {
        std::process::exit(1);
    }
    Ok(())
}
