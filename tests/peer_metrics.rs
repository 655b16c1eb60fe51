//! The counters of [`PeerMetrics`] after a simple, fully known exchange.

mod common;

use common::*;
use syncpeer::{Bytes, DisconnectReason, Inbound, PeerConfig, PeerMetrics};

#[test]
fn counters_follow_a_simple_exchange() {
    const SENDS: [&[u8]; 3] = [b"one", b"two!", b"three"];
    const REQUESTS: [&[u8]; 2] = [b"req-a", b"req-bb"];
    const RESPONSE: &[u8] = b"response";
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 64);
        assert_eq!(a.handle.metrics(), PeerMetrics::default(), "{t:?}: fresh");

        for s in SENDS {
            a.handle.send(DIRECT, Bytes::from_static(s)).unwrap();
        }
        for s in SENDS {
            assert_eq!(&recv(&b).data()[..], s);
        }
        for r in REQUESTS {
            let h = a.handle.clone();
            let caller = std::thread::spawn(move || h.rpc(RPC, Bytes::from_static(r), WAIT));
            match recv(&b) {
                Inbound::Request {
                    data, responder, ..
                } => {
                    assert_eq!(&data[..], r);
                    responder.respond(Bytes::from_static(RESPONSE)).unwrap();
                }
                other => panic!("{t:?}: unexpected {other:?}"),
            }
            let resp = within("rpc", WAIT, move || caller.join().unwrap()).unwrap();
            assert_eq!(&resp[..], RESPONSE);
        }

        // While open: what each side has seen so far. The reader answers RPC callers itself;
        // the mux counts the completion a moment later.
        eventually("both rpcs counted", || {
            a.handle.metrics().rpcs_succeeded == 2
        });
        let ma = a.handle.metrics();
        assert_eq!(ma.direct_sends_accepted, 3, "{t:?}");
        assert_eq!(ma.rpc_requests_accepted, 2);
        assert_eq!(ma.messages_accepted, 5);
        assert_eq!(ma.bytes_accepted, 3 + 4 + 5 + 5 + 6);
        assert_eq!((ma.rpcs_succeeded, ma.responses_matched), (2, 2));
        assert_eq!(ma.frames_in, 2, "two responses");
        let mb = b.handle.metrics();
        assert_eq!(mb.frames_in, 5, "{t:?}: three sends and two requests");
        assert_eq!((mb.direct_sends_delivered, mb.requests_delivered), (3, 2));
        assert_eq!(
            (mb.rpc_responses_accepted, mb.inbound_rpcs_answered),
            (2, 2)
        );
        assert_eq!(mb.messages_accepted, 2);
        assert_eq!(mb.bytes_accepted, 2 * RESPONSE.len() as u64);

        let h = a.handle.clone();
        let report = within("shutdown", WAIT, move || {
            h.shutdown(DisconnectReason::RequestedByPeerManager)
                .unwrap()
        });
        let b_notice = one_notice(&b.disconnected);
        one_notice(&a.disconnected);

        // After the close every thread has stopped: the counters are final.
        let ma = a.handle.metrics();
        let mb = b.handle.metrics();
        for (m, written, bytes) in [
            (&ma, 5, 3 + 4 + 5 + 5 + 6),
            (&mb, 2, 2 * RESPONSE.len() as u64),
        ] {
            assert_eq!(m.messages_written, written, "{t:?}");
            assert_eq!(m.bytes_written, bytes);
            assert_eq!((m.messages_abandoned, m.bytes_abandoned), (0, 0));
            // Each batch is written by the mux itself or handed to the writer.
            assert!(m.write_calls >= 1 && m.write_batches >= 1);
            assert!(m.write_calls <= written && m.write_batches <= written);
            assert_eq!(m.outbox_depth, 0);
            assert_eq!(
                m.rpcs_failed_at_close + m.rpcs_timed_out + m.rpcs_refused,
                0
            );
            assert_eq!(m.rpcs_cancelled + m.unknown_responses + m.remote_errors, 0);
            assert_eq!(m.dropped_unknown_protocol + m.dropped_handler_full, 0);
            assert_eq!(
                m.dropped_inbound_rpc_limit + m.malformed_frames + m.stream_errors,
                0
            );
            assert_eq!(m.inbound_rpcs_unanswered + m.delivered_during_drain, 0);
        }
        // What one side wrote is what the other read.
        assert_eq!(ma.wire_bytes_out, mb.bytes_in, "{t:?}");
        assert_eq!(mb.wire_bytes_out, ma.bytes_in, "{t:?}");
        // Each frame costs its 4-byte prefix and a few header bytes over the payload; over
        // Noise, each Noise message (at least one, at most one per frame here) 18 more.
        let noise = if Security::current().is_noise() {
            18
        } else {
            0
        };
        assert!(ma.wire_bytes_out > ma.bytes_written + 5 * 4 + noise);
        assert!(ma.wire_bytes_out < ma.bytes_written + 5 * (16 + noise));

        // The report agrees with the counters.
        assert_eq!(report.messages_accepted, ma.messages_accepted);
        assert_eq!(report.bytes_written, ma.bytes_written);
        assert_eq!(b_notice.report.messages_written, mb.messages_written);
    }
}
