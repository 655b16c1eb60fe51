//! Per-connection counters ([`PeerMetrics`]) and the rate-limited warnings for dropped
//! messages. Counters are relaxed atomics bumped by the thread that sees the event; a snapshot
//! is consistent per counter, not across counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

macro_rules! metrics {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// A snapshot of one connection's counters.
        ///
        /// Each counter is read atomically, not all of them at once. While the connection is
        /// open a counter may trail what the application has already seen (the reader answers
        /// an RPC's caller before the mux counts it, a message can be written before the
        /// sending thread has counted it as accepted); once the close has ended they are final
        /// and agree with the [`DrainReport`](crate::DrainReport).
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct PeerMetrics {
            $($(#[doc = $doc])* pub $name: u64,)*
            /// Direct sends accepted, of the messages accepted (the rest are RPC requests and
            /// responses).
            pub direct_sends_accepted: u64,
        }

        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: Padded,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> PeerMetrics {
                let mut m = PeerMetrics {
                    $($name: self.$name.load(Relaxed),)*
                    direct_sends_accepted: 0,
                };
                // Derived, to save an atomic per send: each counter is read on its own, so
                // the difference is clamped.
                m.direct_sends_accepted = m
                    .messages_accepted
                    .saturating_sub(m.rpc_requests_accepted + m.rpc_responses_accepted);
                m
            }
        }
    };
}

metrics! {
    /// Messages (direct sends, RPC requests and responses) accepted for sending.
    messages_accepted,
    /// Payload bytes of the accepted messages.
    bytes_accepted,
    /// Accepted messages whose last byte the kernel took.
    messages_written,
    /// Payload bytes of the written messages.
    bytes_written,
    /// Accepted messages that will never be written (deadline, I/O error, abort).
    messages_abandoned,
    /// Payload bytes of the abandoned messages.
    bytes_abandoned,
    /// RPC requests accepted for sending, of those.
    rpc_requests_accepted,
    /// RPC responses accepted for sending, of those.
    rpc_responses_accepted,
    /// Frames read and decoded.
    frames_in,
    /// Bytes read from the socket (over Noise, ciphertext).
    bytes_in,
    /// Inbound direct sends handed to a handler.
    direct_sends_delivered,
    /// Inbound RPC requests handed to a handler.
    requests_delivered,
    /// Inbound RPC responses that completed a waiting caller.
    responses_matched,
    /// Inbound messages for a protocol with no handler (dropped).
    dropped_unknown_protocol,
    /// Inbound messages dropped because their handler's channel was full or gone.
    dropped_handler_full,
    /// Inbound RPC requests dropped at `max_concurrent_inbound_rpcs`.
    dropped_inbound_rpc_limit,
    /// Inbound RPC responses for no waiting request (late, cancelled or unknown).
    unknown_responses,
    /// Frames that did not decode (answered with `ParsingError`).
    malformed_frames,
    /// `ParsingError` replies not sent because too many were already waiting to be written
    /// (a remote that sends malformed frames and does not read).
    error_replies_dropped,
    /// Stream frames refused by the reassembler.
    stream_errors,
    /// `Error` messages received from the remote.
    remote_errors,
    /// Outbound RPCs answered.
    rpcs_succeeded,
    /// Outbound RPCs that timed out.
    rpcs_timed_out,
    /// Outbound RPCs refused at `max_concurrent_outbound_rpcs`.
    rpcs_refused,
    /// Outbound RPCs failed because the connection closed.
    rpcs_failed_at_close,
    /// Outbound RPCs whose caller stopped waiting.
    rpcs_cancelled,
    /// Inbound RPCs answered in time.
    inbound_rpcs_answered,
    /// Inbound RPCs answered too late, dropped unanswered, or expired.
    inbound_rpcs_unanswered,
    /// Write system calls that moved bytes.
    write_calls,
    /// Bytes written to the socket (frames, including prefixes; over Noise, the ciphertext,
    /// including the messages' prefixes and tags).
    wire_bytes_out,
    /// Batches the writer took from the frames channel.
    write_batches,
    /// Direct sends and RPC requests waiting in the outbox (a gauge, sampled at snapshot time).
    outbox_depth,
    /// Messages delivered to handlers after the close started.
    delivered_during_drain,
    /// Noise transport errors, each fatal to the connection: a message from the remote that
    /// failed authentication, had a bad length or was cut by the end of the stream, or the
    /// send nonce exhausted. The [`NoiseStats`](crate::noise::NoiseStats) of the session's
    /// configuration count the reader's by kind.
    noise_errors,
}

/// One counter per cache line: the reader, mux and writer bump different counters on every
/// message, and packed counters would make those cache lines bounce between cores.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded(AtomicU64);

impl std::ops::Deref for Padded {
    type Target = AtomicU64;

    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A message of `len` payload bytes was accepted for sending.
    pub(crate) fn accept(&self, len: usize) {
        Counters::add(&self.messages_accepted, 1);
        Counters::add(&self.bytes_accepted, len as u64);
    }
}

/// Logs a warning at most once per second per instance, with the count of those suppressed.
#[derive(Debug)]
pub(crate) struct RateLimited {
    what: &'static str,
    last: parking_lot::Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    pub(crate) const fn new(what: &'static str) -> RateLimited {
        RateLimited {
            what,
            last: parking_lot::Mutex::new((None, 0)),
        }
    }

    pub(crate) fn warn(&self, peer: &dyn std::fmt::Display, detail: &dyn std::fmt::Display) {
        let now = Instant::now();
        let mut last = self.last.lock();
        match last.0 {
            Some(t) if now.duration_since(t).as_secs() < 1 => last.1 += 1,
            _ => {
                let suppressed = std::mem::take(&mut last.1);
                last.0 = Some(now);
                drop(last);
                log::warn!(
                    "peer {peer}: {}: {detail} ({suppressed} more since the last warning)",
                    self.what
                );
            }
        }
    }
}
