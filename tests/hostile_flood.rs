//! Floods from a remote that never reads: whatever its input makes this side queue for it stays
//! within a small bound, and what is not sent is counted. Malformed frames get at most
//! `MAX_ERROR_REPLIES` (64) `ParsingError` replies waiting unwritten, the rest are counted in
//! `error_replies_dropped`; requests get at most `max_concurrent_inbound_rpcs` responses
//! waiting unwritten, and further requests are dropped and counted like those over the limit.
//! (A flood of 1.5 million malformed frames once grew the process by 110 MiB.)

mod common;
mod harness;

use std::io::Write;
use std::time::Duration;

use common::{RPC, Raw, Side, WAIT, spawn_side};
use syncpeer::proto::codec::encode_frame;
use syncpeer::proto::{MultiplexMessage, NetworkMessage, RequestId, RpcRequest};
use syncpeer::{Bytes, Inbound, PeerConfig};

/// How many replies may wait unwritten (mirrors the mux's bound).
const MAX_ERROR_REPLIES: u64 = 64;
const INBOUND_LIMIT: usize = 16;

/// A live peer and the raw end of a remote that writes and never reads.
fn flooded() -> (Side, Raw) {
    let (theirs, sock) = common::raw_pair(common::Transport::Tcp);
    sock.set_timeouts(WAIT);
    let config = PeerConfig {
        max_concurrent_inbound_rpcs: INBOUND_LIMIT,
        linger: Duration::from_millis(200),
        ..PeerConfig::default()
    };
    (spawn_side(theirs, 1, 2, config, 1024), sock)
}

#[test]
fn malformed_frames_from_a_remote_that_never_reads_get_a_bounded_number_of_replies() {
    // Replies of 9 bytes each: 9 MB, more than loopback socket buffers hold.
    const FRAMES: u64 = 1_000_000;
    harness::isolated(|| {
        let (side, mut sock) = flooded();
        let rss_before = harness::rss_kib();
        // Length 1, then one byte that is no `MultiplexMessage`: 5 bytes a frame.
        let chunk: Vec<u8> = [0, 0, 0, 1, 0x07].repeat(10_000);
        for _ in 0..FRAMES / 10_000 {
            sock.write_all(&chunk).expect("the peer keeps reading");
        }
        // A reply frame is 9 bytes (over Noise, each Noise message adds 18 more: this then
        // counts up to two replies too many per Noise message, a few among thousands). Every malformed frame's reply is written, waiting (at most
        // 64), or dropped and counted; this times out if replies pile up past the bound.
        harness::wait_until("every frame read and answered or counted", WAIT, || {
            let m = side.handle.metrics();
            let written = m.wire_bytes_out / 9;
            m.malformed_frames == FRAMES
                && m.error_replies_dropped + written + MAX_ERROR_REPLIES >= FRAMES
        });
        let m = side.handle.metrics();
        assert!(
            m.error_replies_dropped > 0,
            "the socket buffers cannot hold them all"
        );
        let grown = harness::rss_kib().saturating_sub(rss_before);
        assert!(grown < 32 * 1024, "resident memory grew by {grown} KiB");
        assert!(!side.handle.is_closed(), "the connection is kept");
        side.handle.abort().unwrap();
    });
}

#[test]
fn requests_from_a_remote_that_never_reads_get_a_bounded_number_of_responses() {
    const REQUESTS: u64 = 20_000;
    const ANSWER: usize = 4096;
    harness::isolated(|| {
        let (side, mut sock) = flooded();
        // The application answers every request it gets, at once.
        let (inbound, handle) = (side.inbound.clone(), side.handle.clone());
        let answering = std::thread::spawn(move || {
            let answer = Bytes::from(vec![0xAB; ANSWER]);
            while let Ok(m) = inbound.recv_timeout(Duration::from_secs(2)) {
                if let Inbound::Request { responder, .. } = m {
                    let _ = responder.respond(answer.clone());
                }
            }
            handle
        });
        let mut input = Vec::new();
        for i in 0..REQUESTS {
            let r = MultiplexMessage::Message(NetworkMessage::RpcRequest(RpcRequest {
                protocol_id: RPC,
                request_id: RequestId(i as u32),
                priority: 0,
                raw_request: Bytes::from_static(b"q"),
            }));
            let mut out = bytes::BytesMut::new();
            encode_frame(&r, 1 << 20, &mut out).unwrap();
            input.extend_from_slice(&out);
        }
        sock.write_all(&input).expect("the peer keeps reading");
        harness::wait_until("every request handled", WAIT, || {
            let m = side.handle.metrics();
            m.requests_delivered + m.dropped_inbound_rpc_limit == REQUESTS
        });
        let handle = answering.join().unwrap();
        let m = handle.metrics();
        assert!(m.dropped_inbound_rpc_limit > 0, "{m:?}");
        // Responses accepted and not written: at most the limit.
        let unsent = m.rpc_responses_accepted - m.messages_written;
        assert!(
            unsent <= INBOUND_LIMIT as u64,
            "{unsent} responses queued: {m:?}"
        );
        assert!(!handle.is_closed(), "the connection is kept");
        handle.abort().unwrap();
    });
}
