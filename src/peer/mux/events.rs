//! What the mux does with the session's events: requests to their handlers (each with its
//! [`Responder`]), outbound RPC outcomes to their callers, and the rest counted and logged.

use super::Mux;
use crate::error::RpcError;
use crate::peer::Inbound;
use crate::peer::call::RpcTx;
use crate::peer::close;
use crate::peer::metrics::Counters;
use crate::peer::responder::Responder;
use crate::proto::{Event, RpcFailure};

impl Mux {
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
                // A request the handler did not take (or evicted) drops its responder, which
                // frees the slot through the outbox.
                match handler.deliver(msg) {
                    Ok(evicted) => {
                        Counters::add(&counters.requests_delivered, 1);
                        if shared.is_closing() {
                            Counters::add(&counters.delivered_during_drain, 1);
                        }
                        if evicted.is_some() {
                            Counters::add(&counters.dropped_handler_full, 1);
                            shared.warnings.handler_full.warn(&shared.remote, &protocol);
                        }
                    }
                    Err(_) => {
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
