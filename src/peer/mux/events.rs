//! What the mux does with the session's events: requests to their handlers (each with its
//! [`Responder`]), outbound RPC outcomes to their callers, and the rest counted and logged.
//! A request for a full blocking handler is held, in order, until the handler has room (see
//! `Mux::wait`); requests already held for its channel keep later ones behind them.

use std::time::Instant;

use super::Mux;
use crate::error::RpcError;
use crate::peer::Inbound;
use crate::peer::call::RpcTx;
use crate::peer::close;
use crate::peer::handler::Delivered;
use crate::peer::held::Flushed;
use crate::peer::metrics::Counters;
use crate::peer::responder::Responder;
use crate::proto::{Event, RpcFailure};

impl Mux {
    /// Hands held requests to their blocking handlers while they have room.
    pub(super) fn flush_held(&mut self, now: Instant) {
        if !self.held.is_empty() {
            let flushed = self.held.flush(&self.handlers, now);
            self.settle_held(flushed);
        }
    }

    /// Counts what handing over held requests did.
    pub(super) fn settle_held(&self, f: Flushed) {
        let shared = &self.shared;
        let counters = &shared.counters;
        Counters::add(&counters.requests_delivered, f.delivered);
        if shared.is_closing() {
            Counters::add(&counters.delivered_during_drain, f.delivered);
        }
        if f.dropped > 0 {
            // Past its deadline while it waited, or the handler's receiver is gone.
            Counters::add(&counters.dropped_handler_full, f.dropped);
            shared
                .warnings
                .handler_full
                .warn(&shared.remote, &"request held for a blocking handler");
        }
    }

    pub(super) fn deliver(&mut self, ev: Event<RpcTx>) {
        let shared = &self.shared;
        let counters = &shared.counters;
        match ev {
            Event::Request {
                protocol,
                data,
                slot,
                deadline,
            } => {
                let Some(handler) = self.handlers.get(protocol) else {
                    self.session.abandon_request(slot);
                    Counters::add(&counters.dropped_unknown_protocol, 1);
                    return shared
                        .warnings
                        .unknown_protocol
                        .warn(&shared.remote, &protocol);
                };
                let msg = Inbound::Request {
                    from: shared.remote,
                    protocol,
                    data,
                    responder: Responder::new(shared.clone(), slot, deadline),
                };
                if handler.blocking_sender().is_some() {
                    let sink = self.handlers.sink(protocol);
                    if self.held.holds(sink) {
                        return self.held.push(sink, msg);
                    }
                }
                // A request the handler did not take (or evicted) drops its responder, which
                // frees the slot through the outbox.
                match handler.deliver(msg) {
                    Delivered::Taken => {
                        Counters::add(&counters.requests_delivered, 1);
                        if shared.is_closing() {
                            Counters::add(&counters.delivered_during_drain, 1);
                        }
                    }
                    Delivered::Full(msg) => {
                        let sink = self.handlers.sink(protocol);
                        self.held.push(sink, msg);
                    }
                    // An eviction leaves the queue as full as before: one drop, no delivery.
                    Delivered::Evicted(_) | Delivered::Dropped(_) => {
                        Counters::add(&counters.dropped_handler_full, 1);
                        shared.warnings.handler_full.warn(&shared.remote, &protocol);
                    }
                }
            }
            Event::Message { protocol, .. } => {
                // The reader delivers direct sends itself: a session fed by it never emits
                // this.
                log::error!(
                    "peer {}: direct send for {protocol} reached the mux",
                    shared.remote
                );
            }
            Event::RequestRefused {
                protocol,
                request_id,
            } => {
                Counters::add(&counters.dropped_inbound_rpc_limit, 1);
                shared.warnings.inbound_rpc_limit.warn(
                    &shared.remote,
                    &format_args!("{protocol}, request {}", request_id.0),
                );
            }
            Event::RpcDone {
                request_id,
                token,
                result,
            } => {
                let Some(caller) = shared.take_caller(request_id) else {
                    // The reader answered the caller a moment before this timer.
                    Counters::add(&counters.rpcs_succeeded, 1);
                    Counters::add(&counters.responses_matched, 1);
                    return;
                };
                let outcome = match result {
                    Ok(data) => {
                        let counter = if token.is_cancelled() {
                            &counters.rpcs_cancelled
                        } else {
                            Counters::add(&counters.responses_matched, 1);
                            &counters.rpcs_succeeded
                        };
                        Counters::add(counter, 1);
                        Ok(data)
                    }
                    Err(RpcFailure::TimedOut) => {
                        Counters::add(&counters.rpcs_timed_out, 1);
                        Err(RpcError::TimedOut)
                    }
                    Err(RpcFailure::Closed) => {
                        Counters::add(&counters.rpcs_failed_at_close, 1);
                        Err(close::rpc_error(shared))
                    }
                };
                let _ = caller.try_send(outcome);
            }
            Event::UnknownResponse(id) => {
                Counters::add(&counters.unknown_responses, 1);
                log::trace!(
                    "peer {}: response for unknown request {}",
                    shared.remote,
                    id.0
                );
            }
            Event::RemoteError(e) => {
                Counters::add(&counters.remote_errors, 1);
                shared
                    .warnings
                    .remote_error
                    .warn(&shared.remote, &format_args!("{e:?}"));
            }
            Event::Stream(e) => {
                Counters::add(&counters.stream_errors, 1);
                shared.warnings.stream.warn(&shared.remote, &e);
            }
        }
    }
}
