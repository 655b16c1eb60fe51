//! What the application may do on a connection's own threads (inside an inline handler), and
//! what happens when one of those threads panics: the close starts, nothing waits forever,
//! and every accepted message still has exactly one outcome.

mod common;

use std::sync::{Arc, OnceLock};

use common::*;
use syncpeer::{Bytes, DisconnectReason, Handler, Inbound, JoinError, Peer, PeerHandle, PeerId};

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
        let b = Peer::builder(b)
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
