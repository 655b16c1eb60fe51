//! [`Responder`]: answers one inbound RPC request, through the outbox like every other
//! outgoing message, so a thread's response and its later sends reach the wire in that order.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::outbox::Command;
use super::shared::Shared;
use crate::error::RespondError;

/// Answers one inbound RPC request. Dropping it unanswered sends nothing: the remote times out,
/// as with the original.
pub struct Responder {
    shared: Arc<Shared>,
    slot: u64,
    deadline: Instant,
    done: bool,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("peer", &self.shared.remote)
            .field("slot", &self.slot)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Responder {
    pub(crate) fn new(shared: Arc<Shared>, slot: u64, deadline: Instant) -> Responder {
        Responder {
            shared,
            slot,
            deadline,
            done: false,
        }
    }

    /// When the remote stops waiting (`inbound_rpc_timeout` after the request arrived).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Queues the response. Never blocks: at most one response per admitted request can be
    /// queued, and admitted requests are bounded by `max_concurrent_inbound_rpcs`, so
    /// responses are not held to `outbox_capacity`. Once accepted, the response has exactly one
    /// outcome in the connection's counters: written or abandoned.
    ///
    /// # Errors
    ///
    /// [`RespondError::TimedOut`] past the deadline, [`RespondError::Disconnected`] once the
    /// close has finished with the requests (or the response exceeds
    /// `PeerConfig::max_payload`, which the original could not send either); nothing is sent
    /// then.
    pub fn respond(mut self, data: Bytes) -> Result<(), RespondError> {
        let at = Instant::now();
        if at >= self.deadline {
            return Err(RespondError::TimedOut);
        }
        if data.len() > self.shared.max_payload {
            return Err(RespondError::Disconnected);
        }
        let slot = self.slot;
        self.shared
            .outbox
            .send_reply(Command::Respond { slot, at, data })
            .map_err(|_| RespondError::Disconnected)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            // Frees the request's slot; refused only once the mux is done with every slot.
            let _ = self
                .shared
                .outbox
                .send_reply(Command::Unanswered { slot: self.slot });
        }
    }
}
