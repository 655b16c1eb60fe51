//! Every I/O error path, through the fault relay (`tests/fault`) or the peer's own socket:
//! reader and writer errors while running and during the drain, EOF inside and between
//! frames, and `write_timeout` against a relay that stops reading. Each test checks the
//! reason, that the report adds up (accepted == written + abandoned), that receipts agree,
//! and that every thread is joined.

mod common;
mod fault;
mod harness;

use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{
    DIRECT, Raw, RawSock, Security, Side, WAIT, assert_balanced, disconnected, recv, spawn_side,
};
use fault::{Dir, Fault, Relay, Trigger, relay_pair};
use harness::{Bounded, spawn_bounded, wait_until};
use syncpeer::noise::{CLIENT_MESSAGE_LEN, ReadError, encrypted_len};
use syncpeer::{Bytes, Delivery, DisconnectReason, DrainReport, PeerConfig, Receipt, SendError};

fn config(linger: Duration) -> PeerConfig {
    PeerConfig {
        linger,
        ..PeerConfig::default()
    }
}

/// A (id 1) ⇄ relay ⇄ B (id 2). Over Noise the handshake crosses the relay first (A dials).
fn relayed(config: PeerConfig) -> (Side, Side, Relay) {
    common::init_logging();
    let (a, b, relay) = relay_pair();
    let (a, b) = common::secured(a.into(), b.into());
    (
        spawn_side(a, 1, 2, config.clone(), 1024),
        spawn_side(b, 2, 1, config, 1024),
        relay,
    )
}

/// A (id 1) ⇄ relay ⇄ a raw end that the test drives.
fn relayed_raw(config: PeerConfig) -> (Side, Raw, Relay) {
    common::init_logging();
    let (a, raw, relay) = relay_pair();
    let (a, raw) = common::secured_raw(a.into(), RawSock::Tcp(raw));
    raw.set_read_timeout(Duration::from_millis(50));
    (spawn_side(a, 1, 2, config, 1024), raw, relay)
}

/// The offset in direction A → B, as the relay counts it, of byte `n` of what A writes after
/// the connection is set up (over Noise, the client's handshake message comes first).
fn a_to_b(n: u64) -> u64 {
    if Security::current().is_noise() {
        CLIENT_MESSAGE_LEN as u64 + n
    } else {
        n
    }
}

/// Bytes on the wire for `plain` bytes of frames written in one batch: over Noise, one Noise
/// message (up to 65,519 bytes) with its prefix and tag.
fn sealed(plain: u64) -> u64 {
    if Security::current().is_noise() {
        encrypted_len(plain as usize) as u64
    } else {
        plain
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Joins the side (the report must match its one notice) and returns the notice's report.
#[track_caller]
fn finish(side: &Side) -> DrainReport {
    let notice = disconnected(side);
    assert_eq!(side.handle.join().unwrap(), notice.report);
    assert!(
        side.disconnected.recv_timeout(WAIT).is_err(),
        "exactly one Disconnected"
    );
    assert_balanced(&notice.report);
    notice.report
}

fn outcomes(receipts: Vec<Receipt>) -> (u64, u64) {
    let mut written = 0;
    let mut abandoned = 0;
    for r in receipts {
        match r.wait_timeout(WAIT).expect("receipt resolved in time") {
            Delivery::Written => written += 1,
            Delivery::Abandoned => abandoned += 1,
        }
    }
    (written, abandoned)
}

/// Frame length of a direct send of `len` (< 128) payload bytes on protocol 2.
fn frame_len(len: usize) -> u64 {
    (4 + 1 + 1 + 1 + 1 + 1 + len) as u64
}

#[test]
fn eof_at_a_frame_boundary_is_connection_closed() {
    harness::isolated(|| {
        let (a, b, relay) = relayed(config(Duration::from_secs(2)));
        let end_of_frame = a_to_b(sealed(frame_len(10)));
        relay.inject(Dir::AToB, Trigger::AtByte(end_of_frame), Fault::Fail);
        a.handle.send(DIRECT, Bytes::from(vec![1; 10])).unwrap();
        assert_eq!(recv(&b).data().len(), 10);
        assert!(relay.wait_fired(Dir::AToB, WAIT));
        let rb = finish(&b);
        assert_eq!(rb.reason, DisconnectReason::ConnectionClosed);
        let ra = finish(&a);
        assert_eq!(ra.reason, DisconnectReason::ConnectionClosed);
        assert_eq!((ra.messages_written, ra.messages_abandoned), (1, 0));
    });
}

#[test]
fn eof_inside_a_frame_is_an_io_error() {
    harness::isolated(|| {
        let (a, b, relay) = relayed(config(Duration::from_secs(2)));
        // Half of the frame (over Noise, of its Noise message) reaches B, then both
        // connections close.
        let half = a_to_b(sealed(frame_len(100)) / 2);
        relay.inject(Dir::AToB, Trigger::AtByte(half), Fault::Fail);
        a.handle.send(DIRECT, Bytes::from(vec![1; 100])).unwrap();
        let rb = finish(&b);
        assert_eq!(rb.reason, DisconnectReason::InputOutputError);
        let m = b.handle.metrics();
        assert_eq!(m.direct_sends_delivered, 0);
        // Over Noise, the cut is inside a Noise message: a truncation.
        assert_eq!(m.noise_errors, u64::from(Security::current().is_noise()));
        let ra = finish(&a);
        // A wrote its frame whole; it then reads EOF, or an RST for the bytes the relay left
        // unread.
        assert!(
            matches!(
                ra.reason,
                DisconnectReason::ConnectionClosed | DisconnectReason::InputOutputError
            ),
            "{ra:?}"
        );
        assert_eq!(ra.messages_written, 1);
    });
}

#[test]
fn reader_error_while_running_is_an_io_error() {
    harness::isolated(|| {
        let (a, b, relay) = relayed(config(Duration::from_secs(2)));
        a.handle
            .send(DIRECT, Bytes::from_static(b"before"))
            .unwrap();
        assert_eq!(&recv(&b).data()[..], b"before");
        // The relay stops reading A; A's next bytes stay unread there, and the relay closes
        // with them unread: the kernel answers A with an RST. A's writer is idle by then, so
        // the reader sees it.
        relay.inject(Dir::AToB, Trigger::Now, Fault::Stall);
        assert!(relay.wait_fired(Dir::AToB, WAIT));
        let receipt = a
            .handle
            .send_with_receipt(DIRECT, Bytes::from_static(b"unread"))
            .unwrap();
        assert_eq!(receipt.wait_timeout(WAIT), Some(Delivery::Written));
        relay.inject(Dir::AToB, Trigger::Now, Fault::Reset);
        assert!(relay.wait_fired(Dir::AToB, WAIT));
        assert!(
            relay.reset_was_real(),
            "the relay had unread bytes to reset with"
        );
        let ra = finish(&a);
        assert_eq!(ra.reason, DisconnectReason::InputOutputError);
        assert!(ra.drain_duration < Duration::from_secs(2), "{ra:?}");
        assert!(ra.is_clean());
        // B had nothing unread at the relay: a plain FIN at a frame boundary.
        assert_eq!(finish(&b).reason, DisconnectReason::ConnectionClosed);
    });
}

#[test]
fn writer_error_while_running_is_an_io_error() {
    harness::isolated(|| {
        common::init_logging();
        let (sa, sb) = common::tcp_pair();
        let own = match &sa.socket {
            syncpeer::Socket::Tcp(s) => s.try_clone().unwrap(),
            syncpeer::Socket::Unix(_) => unreachable!(),
        };
        // The remote is a raw socket that never closes: only A's writer can end this.
        let a = spawn_side(sa, 1, 2, config(Duration::from_millis(300)), 16);
        own.shutdown(Shutdown::Write).unwrap();
        let receipt = a
            .handle
            .send_with_receipt(DIRECT, Bytes::from_static(b"x"))
            .unwrap();
        assert_eq!(receipt.wait_timeout(WAIT), Some(Delivery::Abandoned));
        let ra = finish(&a);
        assert_eq!(ra.reason, DisconnectReason::InputOutputError);
        assert_eq!((ra.messages_accepted, ra.messages_abandoned), (1, 1));
        drop(sb);
    });
}

/// Sends `n` messages of `len` bytes with receipts (bounded by the test's WAIT).
fn flood(side: &Side, n: usize, len: usize) -> Bounded<Vec<Receipt>> {
    let h = side.handle.clone();
    let data = Bytes::from(vec![7u8; len]);
    spawn_bounded("flood", move || {
        let mut receipts = Vec::new();
        for _ in 0..n {
            match h.send_with_receipt(DIRECT, data.clone()) {
                Ok(r) => receipts.push(r),
                Err(SendError::Closed(_)) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        receipts
    })
}

/// Waits until the side's writer has stopped making progress (its socket is full).
fn wait_writer_stuck(side: &Side) {
    let mut last = (u64::MAX, Instant::now());
    wait_until("a stuck writer", WAIT, || {
        let out = side.handle.metrics().wire_bytes_out;
        if out != last.0 {
            last = (out, Instant::now());
        }
        out > 0 && last.1.elapsed() > Duration::from_millis(300)
    });
}

#[test]
fn writer_error_during_the_drain_abandons_the_rest() {
    harness::isolated(|| {
        let (a, b, relay) = relayed(config(Duration::from_secs(10)));
        relay.inject(Dir::AToB, Trigger::Now, Fault::Stall);
        assert!(relay.wait_fired(Dir::AToB, WAIT));
        let receipts = flood(&a, 48, 1 << 20).join(WAIT);
        wait_writer_stuck(&a);
        let h = a.handle.clone();
        let closing = spawn_bounded("shutdown", move || {
            h.shutdown(DisconnectReason::StaleConnection).unwrap()
        });
        wait_until("the close to start", WAIT, || a.handle.is_closed());
        // The reset reaches A's writer while it drains into a full socket.
        relay.inject(Dir::AToB, Trigger::Now, Fault::Reset);
        let report = closing.join(WAIT);
        assert!(relay.reset_was_real());
        assert_eq!(
            report.reason,
            DisconnectReason::StaleConnection,
            "first reason wins"
        );
        assert!(report.messages_abandoned > 0, "{report:?}");
        assert!(
            report.drain_duration < Duration::from_secs(8),
            "the error ended the drain early: {report:?}"
        );
        assert_eq!(finish(&a), report);
        let (written, abandoned) = outcomes(receipts);
        assert_eq!(
            (written, abandoned),
            (report.messages_written, report.messages_abandoned)
        );
        assert!(matches!(
            finish(&b).reason,
            DisconnectReason::ConnectionClosed | DisconnectReason::InputOutputError
        ));
    });
}

#[test]
fn reader_error_during_the_drain_ends_it_early() {
    harness::isolated(|| {
        let (a, mut raw, relay) = relayed_raw(config(Duration::from_secs(10)));
        relay.inject(Dir::AToB, Trigger::Now, Fault::Stall);
        assert!(relay.wait_fired(Dir::AToB, WAIT));
        a.handle
            .send(DIRECT, Bytes::from_static(b"held at the relay"))
            .unwrap();
        let h = a.handle.clone();
        let closing = spawn_bounded("shutdown", move || {
            h.shutdown(DisconnectReason::StaleConnection).unwrap()
        });
        // A has written everything and half-closed; its reader waits for the remote's EOF,
        // which never comes. The reset ends that wait.
        wait_until("the writer to finish", WAIT, || {
            a.handle.metrics().messages_written == 1
        });
        relay.inject(Dir::AToB, Trigger::Now, Fault::Reset);
        let report = closing.join(WAIT);
        assert!(relay.reset_was_real());
        assert_eq!(report.reason, DisconnectReason::StaleConnection);
        assert!(report.is_clean(), "{report:?}");
        assert!(report.drain_duration < Duration::from_secs(8), "{report:?}");
        assert_eq!(finish(&a), report);
        // The raw remote sees the relay close (EOF; it had nothing unread there).
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + WAIT;
        loop {
            match std::io::Read::read(&mut raw, &mut buf) {
                Ok(0) => break,
                Ok(n) => panic!("{n} bytes reached the remote through a stalled relay"),
                Err(e) if Instant::now() < deadline && is_timeout(&e) => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
}

#[test]
fn write_timeout_fires_against_a_stalled_relay() {
    harness::isolated(|| {
        let cfg = PeerConfig {
            write_timeout: Duration::from_millis(300),
            linger: Duration::from_millis(500),
            ..PeerConfig::default()
        };
        let (a, b, relay) = relayed(cfg);
        relay.inject(Dir::AToB, Trigger::Now, Fault::Stall);
        assert!(relay.wait_fired(Dir::AToB, WAIT));
        let started = Instant::now();
        // 256 MiB is far more than the socket buffers hold; sending stops at the close.
        let receipts = flood(&a, 256, 1 << 20).join(WAIT);
        let ra = finish(&a);
        assert_eq!(ra.reason, DisconnectReason::InputOutputError);
        assert!(ra.messages_abandoned > 0, "{ra:?}");
        assert!(started.elapsed() < WAIT);
        // Every message had a receipt, so the receipts are the report.
        let (written, abandoned) = outcomes(receipts);
        assert_eq!(
            (written, abandoned),
            (ra.messages_written, ra.messages_abandoned)
        );
        relay.fail();
        assert!(matches!(
            finish(&b).reason,
            DisconnectReason::ConnectionClosed | DisconnectReason::InputOutputError
        ));
    });
}

#[test]
fn short_writes_deliver_everything_intact() {
    harness::isolated(|| {
        let cfg = PeerConfig {
            max_frame_size: 4096,
            max_message_size: 64 * 1024,
            ..PeerConfig::default()
        };
        let (a, b, relay) = relayed(cfg);
        relay.inject(Dir::AToB, Trigger::Now, Fault::ShortWrites(3));
        relay.inject(Dir::BToA, Trigger::AtCall(1), Fault::ShortWrites(1));
        let sizes = [1usize, 100, 4031, 4032, 4033, 10_000, 64 * 1024, 7];
        for (i, len) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..*len).map(|j| (i + j) as u8).collect();
            a.handle.send(DIRECT, data.clone().into()).unwrap();
            b.handle.send(DIRECT, data.into()).unwrap();
        }
        // A small message may overtake a streamed one (fragments interleave with small
        // frames), so check the set, by length (all different), not the order.
        for side in [&b, &a] {
            let mut got: Vec<Bytes> = (0..sizes.len())
                .map(|_| recv(side).data().clone())
                .collect();
            got.sort_by_key(|d| d.len());
            let mut expected: Vec<(usize, usize)> = sizes.iter().copied().enumerate().collect();
            expected.sort_by_key(|(_, len)| *len);
            for (data, (i, len)) in got.iter().zip(expected) {
                assert_eq!(data.len(), len);
                assert!(data.iter().enumerate().all(|(j, x)| *x == (i + j) as u8));
            }
        }
        assert!(relay.forwarded(Dir::AToB) > 64 * 1024);
        let report = a
            .handle
            .shutdown(DisconnectReason::RequestedByPeerManager)
            .unwrap();
        assert!(report.is_clean());
        assert_eq!(report.messages_written, sizes.len() as u64);
        assert_eq!(finish(&b).reason, DisconnectReason::ConnectionClosed);
        assert_eq!(finish(&a), report);
    });
}

#[test]
fn the_relay_cuts_at_the_exact_byte() {
    use std::io::{Read, Write};
    harness::isolated(|| {
        let (mut a, mut b, relay) = relay_pair();
        relay.inject(Dir::AToB, Trigger::AtByte(54), Fault::Fail);
        a.write_all(&[7u8; 109]).unwrap();
        b.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 54);
        assert!(relay.fired(Dir::AToB));
    });
}

/// After the writer gives up in the middle of a frame (here at `write_timeout`, against a
/// remote that has stopped reading), nothing more is written: the remote, reading at last,
/// finds whole, intact messages (exactly those whose receipts say `Written`), then perhaps the
/// torn frame, then the end. (Another thread once wrote its frame right behind the torn one.)
/// In plaintext and over Noise, whatever the suites run: over Noise a message counts as
/// written only once the Noise message holding its last byte is whole, and the torn Noise
/// message, if any, is the last thing on the wire (anything after it would fail to open).
#[test]
fn nothing_follows_a_frame_torn_by_the_writer_giving_up() {
    use std::collections::HashSet;
    use syncpeer::proto::{FrameDecoder, MultiplexMessage, NetworkMessage};
    const SENDERS: u64 = 2;
    const LEN: usize = 48 * 1024;
    let cases = common::TRANSPORTS
        .into_iter()
        .flat_map(|t| [(t, Security::Plain), (t, Security::Noise)]);
    harness::isolated(|| {
        for (t, security) in cases {
            let cfg = PeerConfig {
                write_timeout: Duration::from_millis(300),
                linger: Duration::from_millis(300),
                ..PeerConfig::default()
            };
            let (socket, mut raw) = common::raw_pair_with(t, security);
            let (h, _, notices) = common::spawn_peer(socket, 2, cfg, &[]);
            let senders: Vec<_> = (0..SENDERS)
                .map(|s| {
                    let h = h.clone();
                    spawn_bounded("sender", move || {
                        let mut receipts = Vec::new();
                        for i in 0.. {
                            let index = s << 32 | i;
                            match h.send_with_receipt(DIRECT, common::numbered(index, LEN)) {
                                Ok(r) => receipts.push((index, r)),
                                Err(SendError::Closed(_)) => break,
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        receipts
                    })
                })
                .collect();
            let receipts: Vec<_> = senders.into_iter().flat_map(|s| s.join(WAIT)).collect();
            let notice = notices.recv_timeout(WAIT).expect("the notice");
            assert_eq!(
                notice.reason,
                DisconnectReason::InputOutputError,
                "{t:?} {security:?}"
            );
            assert_balanced(&notice.report);
            let written: HashSet<u64> = receipts
                .iter()
                .filter(|(_, r)| r.wait_timeout(WAIT) == Some(Delivery::Written))
                .map(|(i, _)| *i)
                .collect();
            assert_eq!(
                written.len() as u64,
                notice.report.messages_written,
                "{t:?}"
            );
            // Now the remote reads everything there is.
            let bytes = raw.read_to_eof();
            let mut decoder = FrameDecoder::new(PeerConfig::default().max_frame_size);
            decoder.extend(&bytes);
            let mut received = HashSet::new();
            while let Some(frame) = decoder.decode().expect("no garbage after a torn frame") {
                let MultiplexMessage::Message(NetworkMessage::DirectSendMsg(m)) = frame else {
                    panic!("{t:?}: unexpected {frame:?}");
                };
                assert_eq!(
                    m.raw_msg,
                    common::numbered(common::index_of(&m.raw_msg), LEN)
                );
                assert!(
                    received.insert(common::index_of(&m.raw_msg)),
                    "{t:?}: twice"
                );
            }
            assert_eq!(
                received, written,
                "{t:?}: what arrived whole is what was written"
            );
            assert!(
                decoder.buffered() < LEN + 16,
                "{t:?}: at most one torn frame at the end"
            );
            // Over Noise the stream ends at a message boundary or inside the last message,
            // never with bytes that fail to open (read_to_eof would have failed).
            assert_eq!(raw.is_noise(), security.is_noise());
            if security.is_noise() {
                assert!(
                    matches!(
                        raw.noise_end(),
                        Some(Ok(()) | Err(ReadError::Truncated { .. }))
                    ),
                    "{t:?}: {:?}",
                    raw.noise_end()
                );
            }
            let h2 = h.clone();
            within_join(&h2, &notice.report);
        }
    });
}

/// `join` returns the notice's report.
#[track_caller]
fn within_join(h: &syncpeer::PeerHandle, report: &DrainReport) {
    let h = h.clone();
    let joined = spawn_bounded("join", move || h.join().unwrap()).join(WAIT);
    assert_eq!(&joined, report);
}

/// During the drain, while the writer is stuck on a remote that does not read, the reader
/// keeps reading whatever the remote sends, RPC traffic included, after the mux has ended:
/// the remote's writes never wait on this side. (The reader once blocked on its full channel
/// to a mux that had ended, and stopped reading before the remote's EOF.)
#[test]
fn the_reader_keeps_reading_during_a_drain_stuck_on_the_writer() {
    use std::io::Write;
    use syncpeer::proto::codec::encode_frame;
    use syncpeer::proto::{MultiplexMessage, NetworkMessage, RequestId, RpcRequest};
    const REQUESTS: u32 = 20_000;
    harness::isolated(|| {
        let cfg = PeerConfig {
            linger: Duration::from_secs(10),
            ..PeerConfig::default()
        };
        let (socket, mut raw) = common::raw_pair(common::Transport::Unix);
        let (h, _, notices) = common::spawn_peer(socket, 2, cfg, &[(common::RPC, 4)]);
        // More than the socket holds: the writer gets stuck, the remote reading nothing.
        for i in 0..64 {
            h.send(DIRECT, common::numbered(i, 64 * 1024)).unwrap();
        }
        wait_until("the writer to be stuck", WAIT, || {
            let m = h.metrics();
            m.wire_bytes_out > 0 && m.messages_written < 64
        });
        h.close(DisconnectReason::StaleConnection);
        // Now the remote sends far more requests than any channel between the threads holds.
        let mut input = bytes::BytesMut::new();
        for i in 0..REQUESTS {
            let request = MultiplexMessage::Message(NetworkMessage::RpcRequest(RpcRequest {
                protocol_id: common::RPC,
                request_id: RequestId(i),
                priority: 0,
                raw_request: Bytes::from_static(b"during the drain"),
            }));
            encode_frame(&request, 1 << 20, &mut input).unwrap();
        }
        raw.set_timeouts(Duration::from_secs(5));
        let started = Instant::now();
        raw.write_all(&input)
            .expect("the peer reads everything during the drain");
        raw.shutdown_write();
        assert!(started.elapsed() < Duration::from_secs(5));
        wait_until("every request read", WAIT, || {
            h.metrics().frames_in == u64::from(REQUESTS)
        });
        // The remote reads at last: what was queued is written, the close ends.
        let received = spawn_bounded("remote reads", move || raw.read_to_eof().len());
        let notice = notices.recv_timeout(WAIT).expect("the notice");
        assert_balanced(&notice.report);
        assert!(notice.report.is_clean(), "{:?}", notice.report);
        assert!(received.join(WAIT) >= 64 * 64 * 1024);
    });
}
