//! Per-connection counters ([`PeerMetrics`]), the receiving side's drops by cause
//! ([`ReceiveDrops`]) and the rate-limited warnings for dropped messages. Counters are relaxed
//! atomics bumped by the thread that sees the event; a snapshot is consistent per counter, not
//! across counters.

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

        /// Unpadded: only the first counters (messages and bytes accepted, bumped by the
        /// application's threads on every send) are written per message; the threads of the
        /// connection add theirs once per read, batch or write. The whole block starts on a
        /// cache line of its own.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
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

        /// Adds every counter of `other` (gauges too): the totals over several connections.
        impl std::ops::AddAssign<&PeerMetrics> for PeerMetrics {
            fn add_assign(&mut self, other: &PeerMetrics) {
                $(self.$name += other.$name;)*
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
    /// Inbound messages dropped because their handler could not take them: its channel or
    /// FIFO sub-queue was full (a dropping handler), its receiver was gone, a KLAST or LIFO
    /// queue evicted an older message for it, an inline handler panicked, or (for a request
    /// held for a blocking handler) the request's deadline passed before there was room.
    dropped_handler_full,
    /// Inbound RPC requests dropped at `max_concurrent_inbound_rpcs`.
    dropped_inbound_rpc_limit,
    /// Inbound messages lost to refused stream frames: a refused header (its message), or a
    /// stream in progress discarded for a new header or for growing over `max_message_size`.
    /// One per message, however many of its frames were refused; a refused fragment of a
    /// stream already counted adds nothing here (it is counted in `stream_errors`).
    dropped_stream_rejected,
    /// Inbound messages read but not delivered because the connection was closing: direct
    /// sends the reader held for a full blocking handler when it was stopped (abort, the drain
    /// deadline), requests held for a full blocking handler when the mux finished, and
    /// requests that reached the mux after it had ended.
    dropped_at_close,
    /// Inbound RPC responses for no waiting request (late, cancelled or unknown).
    unknown_responses,
    /// Frames that did not decode (answered with `ParsingError`): each counts as one inbound
    /// message dropped.
    malformed_frames,
    /// `ParsingError` replies not sent because too many were already waiting to be written
    /// (a remote that sends malformed frames and does not read).
    error_replies_dropped,
    /// Stream frames refused by the reassembler (frames; the messages lost are
    /// `dropped_stream_rejected`).
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

impl PeerMetrics {
    /// Inbound direct sends and requests handed to a handler.
    pub fn delivered(&self) -> u64 {
        self.direct_sends_delivered + self.requests_delivered
    }

    /// Inbound messages dropped, by cause.
    pub fn receive_drops(&self) -> ReceiveDrops {
        ReceiveDrops {
            handler_full: self.dropped_handler_full,
            unknown_protocol: self.dropped_unknown_protocol,
            inbound_rpc_limit: self.dropped_inbound_rpc_limit,
            malformed: self.malformed_frames,
            stream_rejected: self.dropped_stream_rejected,
            at_close: self.dropped_at_close,
        }
    }
}

/// Inbound messages (direct sends and RPC requests) received but not delivered to a handler,
/// by cause: the receiving side's counterpart of `messages_abandoned`. See [`PeerMetrics`] for
/// each cause in full, and the [`peer`](crate::peer) module for the equation they complete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReceiveDrops {
    /// The handler could not take it (`dropped_handler_full`).
    pub handler_full: u64,
    /// No handler for its protocol (`dropped_unknown_protocol`).
    pub unknown_protocol: u64,
    /// An RPC request over `max_concurrent_inbound_rpcs` (`dropped_inbound_rpc_limit`).
    pub inbound_rpc_limit: u64,
    /// A frame that did not decode (`malformed_frames`).
    pub malformed: u64,
    /// Lost with a refused or discarded stream (`dropped_stream_rejected`).
    pub stream_rejected: u64,
    /// Read while the connection was closing and not delivered (`dropped_at_close`).
    pub at_close: u64,
}

impl ReceiveDrops {
    /// All causes together.
    pub fn total(&self) -> u64 {
        self.handler_full
            + self.unknown_protocol
            + self.inbound_rpc_limit
            + self.malformed
            + self.stream_rejected
            + self.at_close
    }

    /// True if nothing received was dropped.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
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
