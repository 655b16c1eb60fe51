//! Streaming of large messages: one 64 MiB message per transport at the default frame size
//! while small messages flow both ways, and, with small frames, many fragmented messages and
//! RPCs in both directions at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::Receiver;
use syncpeer::{Bytes, Inbound, PeerConfig};

/// Size of the one large message per transport (the default `max_message_size`).
const LARGE: usize = 64 << 20;
/// Small messages sent in each direction alongside it.
const SMALL: u64 = 300;
const SMALL_LEN: usize = 24;

/// Receives `smalls` numbered small messages (in order) and `larges.len()` large ones (in
/// order, matched by checksum); returns how many small ones came before the first large one.
#[track_caller]
fn receive_mixed(rx: &Receiver<Inbound>, smalls: u64, larges: &[(usize, u64)]) -> u64 {
    let (mut next_small, mut next_large, mut before_first_large) = (0u64, 0usize, 0u64);
    while next_small < smalls || next_large < larges.len() {
        let m = rx.recv_timeout(WAIT).expect("message in time");
        let data = m.data();
        if data.len() == SMALL_LEN {
            assert_eq!(
                index_of(data),
                next_small,
                "small messages keep their order"
            );
            next_small += 1;
            if next_large == 0 {
                before_first_large += 1;
            }
        } else {
            let (len, sum) = larges
                .get(next_large)
                .copied()
                .expect("no extra large message");
            assert_eq!(data.len(), len, "large message {next_large}: length");
            assert_eq!(checksum(data), sum, "large message {next_large}: contents");
            next_large += 1;
        }
    }
    assert!(rx.try_recv().is_err(), "nothing more arrives");
    before_first_large
}

#[test]
fn sixty_four_mib_message_with_small_traffic_both_ways() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 1024);
        let large = pattern(LARGE, 64);
        let expected = [(LARGE, checksum(&large))];
        let start = Instant::now();
        let receipt = a.handle.send_with_receipt(DIRECT, large).unwrap();
        // Small messages the same way, queued right behind the large one...
        let ha = a.handle.clone();
        let same_way = std::thread::spawn(move || {
            for i in 0..SMALL {
                ha.send(DIRECT, numbered(i, SMALL_LEN)).unwrap();
            }
        });
        // ...and the other way at the same time.
        let hb = b.handle.clone();
        let other_way = std::thread::spawn(move || {
            for i in 0..SMALL {
                hb.send(DIRECT, numbered(i, SMALL_LEN)).unwrap();
            }
        });
        let a_in = a.inbound.clone();
        let back = std::thread::spawn(move || receive_mixed(&a_in, SMALL, &[]));
        let before = receive_mixed(&b.inbound, SMALL, &expected);
        within("senders and receiver", WAIT, move || {
            same_way.join().unwrap();
            other_way.join().unwrap();
            back.join().unwrap();
        });
        assert_eq!(
            receipt.wait_timeout(WAIT),
            Some(syncpeer::Delivery::Written)
        );
        eprintln!(
            "{t:?}: 64 MiB in {:?}; {before} of {SMALL} small messages overtook it",
            start.elapsed()
        );
        let m = b.handle.metrics();
        assert_eq!(m.direct_sends_delivered, SMALL + 1);
        assert_eq!(m.stream_errors, 0);
    }
}

#[test]
fn many_fragments_both_ways_with_small_frames() {
    /// 16 KiB frames: a 2 MiB message is a header and 128 fragments.
    const FRAME: usize = 16 * 1024;
    const MESSAGE: usize = 2 << 20;
    const LARGES: u64 = 3;
    let config = PeerConfig {
        max_frame_size: FRAME,
        max_message_size: MESSAGE,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, config.clone(), 1024);
        // Each side sends large messages of different sizes (the largest at the limit) with
        // small ones interleaved; two streams never interleave, so large ones keep their order.
        let mut expected = Vec::new();
        let mut senders = Vec::new();
        for (side, seed) in [(&a, 100u64), (&b, 200u64)] {
            let larges: Vec<Bytes> = (0..LARGES)
                .map(|k| pattern(MESSAGE - (k as usize) * 12_345, seed + k))
                .collect();
            expected.push(
                larges
                    .iter()
                    .map(|l| (l.len(), checksum(l)))
                    .collect::<Vec<_>>(),
            );
            let h = side.handle.clone();
            senders.push(std::thread::spawn(move || {
                let mut small = 0;
                for large in larges {
                    h.send(DIRECT, large).unwrap();
                    for _ in 0..SMALL / LARGES {
                        h.send(DIRECT, numbered(small, SMALL_LEN)).unwrap();
                        small += 1;
                    }
                }
            }));
        }
        let a_in = a.inbound.clone();
        let from_b = expected.pop().unwrap();
        let back = std::thread::spawn(move || receive_mixed(&a_in, SMALL, &from_b));
        receive_mixed(&b.inbound, SMALL, &expected[0]);
        within("senders and receiver", WAIT, move || {
            for s in senders {
                s.join().unwrap();
            }
            back.join().unwrap();
        });

        // A streamed request with a streamed response.
        let request = pattern(MESSAGE / 2, 7);
        let response = pattern(MESSAGE, 8);
        let (req_sum, resp_sum) = (checksum(&request), checksum(&response));
        let h = a.handle.clone();
        let caller = std::thread::spawn(move || h.rpc(RPC, request, WAIT));
        match recv(&b) {
            Inbound::Request {
                data, responder, ..
            } => {
                assert_eq!(checksum(&data), req_sum, "{t:?}: streamed request");
                responder.respond(response).unwrap();
            }
            other => panic!("{t:?}: unexpected {other:?}"),
        }
        let got = within("rpc", WAIT, move || caller.join().unwrap()).unwrap();
        assert_eq!(checksum(&got), resp_sum, "{t:?}: streamed response");
        for side in [&a, &b] {
            assert_eq!(side.handle.metrics().stream_errors, 0);
        }
    }
}

/// Invariant 4: a streamed message does not hold a small one back for its whole length. The
/// remote does not read until both are accepted, so the sender is stalled with its pipeline
/// full (the fragments the writer holds, one batch in the frames channel, one in the mux); the
/// small message must come out right behind that, long before the 17th and last fragment.
#[test]
fn small_message_sent_after_a_large_one_overtakes_it() {
    for t in TRANSPORTS {
        let (socket, mut raw) = raw_pair(t);
        let (a, _, _) = spawn_peer(socket, 2, PeerConfig::default(), &[]);
        a.send(DIRECT, pattern(LARGE, 5)).unwrap();
        // Let the stream fill the pipeline and stall on the unread socket: bytes went out and
        // stopped going out for 100 ms.
        let mut last = 0;
        eventually("the writer is stalled", || {
            std::thread::sleep(Duration::from_millis(100));
            let now = a.metrics().wire_bytes_out;
            std::mem::replace(&mut last, now) == now && now > 0
        });
        a.send(DIRECT, numbered(0, SMALL_LEN)).unwrap();
        raw.set_timeouts(WAIT);
        let mut decoder = syncpeer::proto::FrameDecoder::new(PeerConfig::default().max_frame_size);
        let mut fragments_before_small = 0;
        loop {
            match raw.read_frame(&mut decoder).expect("frame before eof") {
                syncpeer::proto::MultiplexMessage::Message(m) => {
                    assert_eq!(m.data_len(), SMALL_LEN);
                    break;
                }
                syncpeer::proto::MultiplexMessage::Stream(_) => fragments_before_small += 1,
            }
        }
        eprintln!("{t:?}: {fragments_before_small} of 17 stream frames before the small message");
        // Ahead of it at most: what the kernel buffers hold (a few MiB on loopback TCP), the
        // fragments the writer holds, the batch in the frames channel, the mux's own batch and
        // one more moved before the mux reads the outbox again (3 or 4 seen).
        assert!(
            fragments_before_small <= 7,
            "{t:?}: {fragments_before_small} of 17 stream frames went out before the small message"
        );
        drop(a);
    }
}
