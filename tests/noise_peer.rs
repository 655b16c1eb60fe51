//! A live peer over Noise against a raw Noise end driven by the test, whatever the suites run
//! (`SYNCPEER_SECURITY`): traffic both ways inside the session, then each kind of bad Noise
//! input mid-stream (a tampered ciphertext, a replayed message, a length too short to hold a
//! tag, a length of 0, the end of the stream inside a message), each closing the connection
//! with `InputOutputError`, counted in `noise_errors` and in the session's `NoiseStats`, with
//! what authenticated before it delivered and memory bounded by one Noise message.

mod common;
mod harness;

use std::io::Write;

use common::{DIRECT, Raw, Security, Transport, WAIT, raw_pair_with, spawn_peer};
use syncpeer::proto::FrameDecoder;
use syncpeer::proto::{MultiplexMessage, NetworkMessage};
use syncpeer::{Bytes, DisconnectReason, Disconnected, Inbound, PeerConfig, PeerHandle};

/// A peer (its remote is id 9) over Noise and the raw end connected to it.
fn noise_peer(
    t: Transport,
) -> (
    PeerHandle,
    crossbeam_channel::Receiver<Inbound>,
    NoticeRx,
    Raw,
) {
    let (socket, raw) = raw_pair_with(t, Security::Noise);
    raw.set_timeouts(WAIT);
    let (h, mut rx, notices) = spawn_peer(socket, 9, PeerConfig::default(), &[(DIRECT, 64)]);
    (h, rx.remove(0), notices, raw)
}

type NoticeRx = crossbeam_channel::Receiver<Disconnected>;

#[test]
fn frames_cross_inside_noise_both_ways_and_the_wire_is_ciphertext() {
    for t in common::TRANSPORTS {
        let (h, rx, notices, mut raw) = noise_peer(t);
        raw.write_all(&common::direct_frame(DIRECT, b"from the raw end"))
            .unwrap();
        let got = rx.recv_timeout(WAIT).expect("delivered");
        assert_eq!(&got.data()[..], b"from the raw end", "{t:?}");
        h.send(DIRECT, Bytes::from_static(b"from the peer"))
            .unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        match raw.read_frame(&mut decoder) {
            Some(MultiplexMessage::Message(NetworkMessage::DirectSendMsg(m))) => {
                assert_eq!(&m.raw_msg[..], b"from the peer", "{t:?}")
            }
            other => panic!("{t:?}: {other:?}"),
        }
        // 22 bytes of frame: one Noise message of 2 + 22 + 16 bytes on the wire (counted a
        // moment after the write).
        common::eventually("the write counted", || h.metrics().messages_written == 1);
        let m = h.metrics();
        assert_eq!(m.wire_bytes_out, 2 + 22 + 16, "{t:?}: {m:?}");
        raw.shutdown_write();
        let notice = common::one_notice(&notices);
        assert_eq!(notice.reason, DisconnectReason::ConnectionClosed, "{t:?}");
        assert_eq!(h.metrics().noise_errors, 0);
    }
}

/// Bad Noise input after one good message: what each case writes under the session.
fn bad_cases(raw: &mut Raw) -> Vec<(&'static str, Vec<u8>, bool)> {
    let good = raw.seal(&common::direct_frame(DIRECT, b"good"));
    let mut tampered = raw.seal(&common::direct_frame(DIRECT, b"evil"));
    tampered[4] ^= 0x01;
    // (name, bytes after the good message, whether the stream then ends)
    vec![
        (
            "a tampered ciphertext",
            [good.clone(), tampered].concat(),
            false,
        ),
        (
            "a replayed message",
            [good.clone(), good.clone()].concat(),
            false,
        ),
        ("a length of 0", [good.clone(), vec![0, 0]].concat(), false),
        (
            "a length shorter than a tag",
            [good.clone(), vec![0, 15], vec![0; 15]].concat(),
            false,
        ),
        (
            "the end inside a message",
            [good.clone(), vec![0xff, 0xff], vec![1; 1000]].concat(),
            true,
        ),
        ("the end inside a prefix", [good, vec![0x00]].concat(), true),
    ]
}

#[test]
fn bad_noise_input_closes_with_an_io_error_counted_and_logged() {
    for t in common::TRANSPORTS {
        for case in 0..6 {
            harness::isolated(|| {
                let (h, rx, notices, mut raw) = noise_peer(t);
                let (name, bytes, then_eof) = bad_cases(&mut raw).swap_remove(case);
                let rss = harness::rss_kib();
                raw.write_ciphertext(&bytes).unwrap();
                if then_eof {
                    raw.shutdown_write();
                }
                // What authenticated before the bad input is delivered.
                let got = rx.recv_timeout(WAIT).expect(name);
                assert_eq!(&got.data()[..], b"good", "{t:?} {name}");
                let notice = common::one_notice(&notices);
                assert_eq!(
                    notice.reason,
                    DisconnectReason::InputOutputError,
                    "{t:?} {name}"
                );
                let m = h.metrics();
                assert_eq!(m.noise_errors, 1, "{t:?} {name}: {m:?}");
                assert_eq!(m.direct_sends_delivered, 1, "{t:?} {name}");
                assert!(rx.try_recv().is_err(), "{t:?} {name}: nothing after");
                assert!(
                    harness::rss_kib() < rss + 8 * 1024,
                    "{t:?} {name}: memory grew"
                );
                assert_eq!(h.join().unwrap(), notice.report);
            });
        }
    }
}

#[test]
fn a_large_message_crosses_in_many_noise_messages() {
    let (socket, mut raw) = raw_pair_with(Transport::Tcp, Security::Noise);
    raw.set_timeouts(WAIT);
    let (h, _, notices) = spawn_peer(socket, 9, PeerConfig::default(), &[]);
    let payload = common::pattern(3 << 20, 7);
    let receipt = h.send_with_receipt(DIRECT, payload.clone()).unwrap();
    let mut decoder = FrameDecoder::new(PeerConfig::default().max_frame_size);
    let mut got = Vec::new();
    // Streamed: a header and fragments, reassembled here by hand.
    while got.len() < payload.len() {
        match raw.read_frame(&mut decoder).expect("frames until the end") {
            MultiplexMessage::Stream(syncpeer::proto::StreamMessage::Header(s)) => {
                let NetworkMessage::DirectSendMsg(m) = s.message else {
                    panic!("a direct send")
                };
                got.extend_from_slice(&m.raw_msg);
            }
            MultiplexMessage::Stream(syncpeer::proto::StreamMessage::Fragment(f)) => {
                got.extend_from_slice(&f.raw_data)
            }
            MultiplexMessage::Message(NetworkMessage::DirectSendMsg(m)) => {
                got.extend_from_slice(&m.raw_msg)
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(common::checksum(&got), common::checksum(&payload));
    assert_eq!(
        receipt.wait_timeout(WAIT),
        Some(syncpeer::Delivery::Written)
    );
    let report = h
        .shutdown(DisconnectReason::RequestedByPeerManager)
        .unwrap();
    assert!(report.is_clean());
    // Over 3 MiB of frames: at least 49 Noise messages of at most 65,519 bytes each.
    assert!(h.metrics().wire_bytes_out >= (3 << 20) + 49 * 18);
    drop(notices);
}
