//! What the application may do on a connection's own threads (inside an inline handler), and
//! what happens when one of those threads panics: the close starts, nothing waits forever,
//! and every accepted message still has exactly one outcome.

mod common;

use std::sync::{Arc, OnceLock};

use common::*;
use syncpeer::{Bytes, DisconnectReason, Handler, Inbound, JoinError, PeerHandle, PeerId};

/// `shutdown`, `abort` and `join` called from an inline handler would wait for the very thread
/// they run on. They start the close and return `JoinError::OwnThread`; the close completes
/// and the notice arrives.
#[test]
fn closing_from_an_inline_handler_starts_the_close_and_returns_an_error() {
    init_logging();
    for call in ["shutdown", "abort", "join"] {
        let (a, b) = unix_pair();
        let (result_tx, result_rx) = crossbeam_channel::bounded(1);
        let own: Arc<OnceLock<PeerHandle>> = Arc::new(OnceLock::new());
        let inline_own = own.clone();
        let (dtx, notices) = crossbeam_channel::unbounded();
        let handler = Handler::inline(move |msg: Inbound| {
            let Inbound::Message { .. } = msg else { return };
            let h = inline_own
                .get()
                .expect("handle set before the first message");
            let result = match call {
                "shutdown" => h.shutdown(DisconnectReason::StaleConnection),
                "abort" => h.abort(),
                _ => {
                    h.close(DisconnectReason::StaleConnection);
                    h.join()
                }
            };
            let _ = result_tx.try_send(result.map(|_| ()));
        });
        let b = b
            .builder()
            .remote_peer_id(PeerId::from_u64(1))
            .handler(DIRECT, handler)
            .on_disconnect(dtx)
            .spawn()
            .expect("spawn b");
        assert!(own.set(b.clone()).is_ok(), "set once");
        let a = spawn_side(a, 1, 2, Default::default(), 16);
        a.handle
            .send(DIRECT, Bytes::from_static(b"close yourself"))
            .expect("send");
        let result = result_rx
            .recv_timeout(WAIT)
            .expect("handler ran and returned");
        assert_eq!(result, Err(JoinError::OwnThread), "{call}");
        let notice = notices.recv_timeout(WAIT).expect("b's notice");
        assert_eq!(notice.peer_id, PeerId::from_u64(1), "{call}");
        // From another thread the same call waits and returns the report.
        assert_eq!(b.join(), Ok(notice.report), "{call}");
        drop(a);
    }
}

/// A payload whose buffer panics when it is freed: freed by the mux when it was copied into a
/// frame (under 1 KiB), by the writer when it was written as a chunk of its own.
struct Bomb(Vec<u8>);

impl AsRef<[u8]> for Bomb {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("a payload's buffer panicked when freed");
    }
}

/// What a panic on the thread named `thread` must leave: a close with `InputOutputError`,
/// one notice, every thread ended, and every accepted message with one outcome.
#[track_caller]
fn assert_closed_by_panic(
    h: &PeerHandle,
    notices: &crossbeam_channel::Receiver<syncpeer::Disconnected>,
    what: &str,
) {
    let notice = notices.recv_timeout(WAIT).expect("the notice");
    assert_eq!(notice.reason, DisconnectReason::InputOutputError, "{what}");
    let report = notice.report;
    assert_balanced(&report);
    let h = h.clone();
    let joined = within("join", WAIT, move || h.join());
    assert_eq!(joined, Ok(report), "{what}");
}

/// A panic on the mux or on the writer closes the connection, and the report still accounts
/// for every message: those written before, the one the panicking thread held, those queued
/// behind it.
#[test]
fn a_panic_on_the_mux_or_the_writer_closes_the_connection_and_keeps_the_accounts() {
    init_logging();
    for (thread, len) in [("mux", 100), ("writer", 4000)] {
        let (a, b) = unix_pair();
        let (dtx, notices) = crossbeam_channel::unbounded();
        let h = a
            .builder()
            .remote_peer_id(PeerId::from_u64(2))
            .on_disconnect(dtx)
            .spawn()
            .expect("spawn");
        let remote = spawn_side(b, 2, 1, Default::default(), 1024);
        for i in 0..10 {
            h.send(DIRECT, numbered(i, 64)).unwrap();
        }
        for i in 0..10 {
            assert_eq!(index_of(recv(&remote).data()), i, "{thread}");
        }
        let _ = h.send(DIRECT, Bytes::from_owner(Bomb(vec![1; len])));
        // Queued behind the panic, or refused once the close has started.
        for i in 10..20 {
            let _ = h.send(DIRECT, numbered(i, 64));
        }
        assert_closed_by_panic(&h, &notices, thread);
        assert!(h.send(DIRECT, numbered(99, 8)).is_err(), "{thread}: closed");
    }
}

/// A panic on the reader (here: an inline handler panics with a payload that panics again when
/// the reader drops it) closes the connection too.
#[test]
fn a_panic_on_the_reader_closes_the_connection() {
    init_logging();
    struct Loud;
    impl Drop for Loud {
        fn drop(&mut self) {
            panic!("a panic payload panicked when dropped");
        }
    }
    let (a, b) = unix_pair();
    let (dtx, notices) = crossbeam_channel::unbounded();
    let h = a
        .builder()
        .remote_peer_id(PeerId::from_u64(2))
        .handler(DIRECT, Handler::inline(|_| std::panic::panic_any(Loud)))
        .on_disconnect(dtx)
        .spawn()
        .expect("spawn");
    let remote = spawn_side(b, 2, 1, Default::default(), 16);
    remote
        .handle
        .send(DIRECT, Bytes::from_static(b"boom"))
        .unwrap();
    h.send(DIRECT, Bytes::from_static(b"still accounted"))
        .unwrap();
    assert_closed_by_panic(&h, &notices, "reader");
}
