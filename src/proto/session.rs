//! The protocol state of one connection, as a sans-IO state machine.
//!
//! A [`Session`] takes inputs through `send`, `start_rpc`, `respond`, `handle_frame` /
//! `handle_message` and `handle_timeout(now)`, and produces outputs through `poll_transmit`
//! (frames to write, in order), `poll_event` (what the application must learn) and
//! `poll_timeout` (when to call `handle_timeout` next). It never reads the clock, so two
//! sessions can be wired back to back on a virtual clock.
//!
//! Outgoing order: messages that fit in a frame go out in the order they were queued; a
//! streamed message goes out one fragment at a time, and between two of its fragments up to one
//! fragment's worth of small frames may pass, so a 64 MiB message does not hold a vote back for
//! its whole length. Two streams never interleave.
//!
//! Generic tokens: `R` travels with an outbound RPC and comes back with its outcome; `K` travels
//! with an outgoing message and comes back with the frame that completes it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::codec::FrameError;
use super::message::{
    DirectSendMsg, ErrorCode, MultiplexMessage, NetworkMessage, ProtocolId, RequestId, RpcRequest,
    RpcResponse, StreamId, StreamMessage,
};
use super::rpc::{InboundRpcs, PendingRpcs, ReplyRefused};
use super::stream::{
    MessageTooLarge, OutboundStream, Reassembler, StreamError, fragment_size, max_payload,
};

/// The limits a session enforces (a subset of `PeerConfig`).
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// Largest frame, in message bytes.
    pub max_frame_size: usize,
    /// Largest message, in payload bytes.
    pub max_message_size: usize,
    /// Outbound RPCs waiting at once.
    pub max_concurrent_outbound_rpcs: usize,
    /// Inbound RPCs handed to the application at once.
    pub max_concurrent_inbound_rpcs: usize,
    /// How long the application has to answer an inbound RPC.
    pub inbound_rpc_timeout: Duration,
}

/// The frame that completes an outgoing message: once it is written, the message is.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion<K> {
    /// Payload bytes of the message.
    pub len: usize,
    /// What the sender passed in.
    pub tag: K,
}

/// One frame to write.
#[derive(Debug)]
pub struct Transmit<K> {
    /// The frame's message.
    pub message: MultiplexMessage,
    /// Set on the last frame of an application message.
    pub completes: Option<Completion<K>>,
}

/// How an outbound RPC failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcFailure {
    /// No response by the deadline.
    TimedOut,
    /// The session closed first.
    Closed,
}

/// Something the application must learn.
#[derive(Debug)]
pub enum Event<R> {
    /// An inbound direct send.
    Message {
        /// Its protocol.
        protocol: ProtocolId,
        /// Its payload.
        data: Bytes,
    },
    /// An inbound request, admitted: answer it with [`Session::respond`] using `slot`.
    Request {
        /// Its protocol.
        protocol: ProtocolId,
        /// Its payload.
        data: Bytes,
        /// Handle for the reply.
        slot: u64,
        /// Replies at or after this instant are refused.
        deadline: Instant,
    },
    /// An inbound request dropped because `max_concurrent_inbound_rpcs` were waiting.
    RequestRefused {
        /// Its protocol.
        protocol: ProtocolId,
        /// The remote's id for it.
        request_id: RequestId,
    },
    /// An outbound RPC finished.
    RpcDone {
        /// Its id.
        request_id: RequestId,
        /// The caller's token.
        token: R,
        /// The response, or why there is none.
        result: Result<Bytes, RpcFailure>,
    },
    /// A response matching no waiting request (late, cancelled, or never sent): ignored.
    UnknownResponse(RequestId),
    /// The remote reported an error.
    RemoteError(ErrorCode),
    /// A stream frame was refused.
    Stream(StreamError),
}

/// Why an RPC was not started. Hands the token back.
#[derive(Debug, PartialEq, Eq)]
pub enum RpcRefused<R> {
    /// `max_concurrent_outbound_rpcs` are waiting.
    TooManyPending(usize, R),
    /// The request is over `max_message_size`.
    TooLarge(MessageTooLarge, R),
}

/// What a closing session hands back: nothing here will be sent or answered.
#[derive(Debug)]
pub struct Leftovers<R, K> {
    /// RPCs still waiting for a response.
    pub rpcs: Vec<(RequestId, R)>,
    /// Messages not yet fully transmitted.
    pub messages: Vec<Completion<K>>,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session<R, K> {
    config: SessionConfig,
    queue: VecDeque<Transmit<K>>,
    streams: VecDeque<(OutboundStream, Completion<K>)>,
    /// Bytes of small frames still allowed before the active stream's next fragment.
    small_budget: usize,
    next_stream: u32,
    outbound: PendingRpcs<R>,
    inbound: InboundRpcs,
    reassembler: Reassembler,
    events: VecDeque<Event<R>>,
}

impl<R, K> Session<R, K> {
    /// A fresh session.
    pub fn new(config: SessionConfig) -> Session<R, K> {
        Session {
            config,
            queue: VecDeque::new(),
            streams: VecDeque::new(),
            small_budget: fragment_size(config.max_frame_size),
            next_stream: 0,
            outbound: PendingRpcs::new(config.max_concurrent_outbound_rpcs),
            inbound: InboundRpcs::new(
                config.max_concurrent_inbound_rpcs,
                config.inbound_rpc_timeout,
            ),
            reassembler: Reassembler::new(config.max_frame_size, config.max_message_size),
            events: VecDeque::new(),
        }
    }

    fn enqueue(&mut self, message: NetworkMessage, tag: K) -> Result<(), (MessageTooLarge, K)> {
        let len = message.data_len();
        let max = max_payload(self.config.max_frame_size, self.config.max_message_size);
        if len > max {
            return Err((MessageTooLarge { len, max }, tag));
        }
        let completes = Completion { len, tag };
        if len <= fragment_size(self.config.max_frame_size) {
            self.queue.push_back(Transmit {
                message: MultiplexMessage::Message(message),
                completes: Some(completes),
            });
            return Ok(());
        }
        let id = StreamId(self.next_stream);
        let stream = OutboundStream::new(
            id,
            message,
            self.config.max_frame_size,
            self.config.max_message_size,
        );
        match stream {
            Ok(stream) => {
                self.next_stream = self.next_stream.wrapping_add(1);
                self.streams.push_back((stream, completes));
                Ok(())
            }
            Err(e) => Err((e, completes.tag)),
        }
    }

    /// Queues a direct send (streamed if large).
    ///
    /// # Errors
    ///
    /// [`MessageTooLarge`] over `max_message_size`, or over what a stream can carry when the
    /// receiver's fragment limit binds first (small frames), with the tag handed back.
    pub fn send(
        &mut self,
        protocol: ProtocolId,
        data: Bytes,
        tag: K,
    ) -> Result<(), (MessageTooLarge, K)> {
        self.enqueue(
            NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: protocol,
                priority: 0,
                raw_msg: data,
            }),
            tag,
        )
    }

    /// Starts an RPC that times out `timeout` after `now`.
    ///
    /// # Errors
    ///
    /// [`RpcRefused`] at the concurrency limit or over the size limit; nothing is sent.
    pub fn start_rpc(
        &mut self,
        now: Instant,
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
        token: R,
        tag: K,
    ) -> Result<RequestId, RpcRefused<R>> {
        let len = data.len();
        // The same limit as `enqueue`, checked before an id and a slot are taken.
        let max = max_payload(self.config.max_frame_size, self.config.max_message_size);
        if len > max {
            return Err(RpcRefused::TooLarge(MessageTooLarge { len, max }, token));
        }
        let request_id = match self.outbound.start(now, protocol, timeout, token) {
            Ok(id) => id,
            Err(e) => return Err(RpcRefused::TooManyPending(e.limit, e.token)),
        };
        let request = NetworkMessage::RpcRequest(RpcRequest {
            protocol_id: protocol,
            request_id,
            priority: 0,
            raw_request: data,
        });
        if self.enqueue(request, tag).is_err() {
            unreachable!("size checked above");
        }
        Ok(request_id)
    }

    /// Answers the inbound request in `slot`; `at` is when the application replied.
    ///
    /// # Errors
    ///
    /// [`ReplyRefused`] if the reply came at or after the deadline, or the slot is unknown.
    /// Nothing is sent then, and the tag is dropped.
    pub fn respond(
        &mut self,
        slot: u64,
        at: Instant,
        data: Bytes,
        tag: K,
    ) -> Result<(), ReplyRefused> {
        let (request_id, priority) = self.inbound.reply(slot, at)?;
        let response = NetworkMessage::RpcResponse(RpcResponse {
            request_id,
            priority,
            raw_response: data,
        });
        // A response over the message limit cannot be sent: treat it as never answered.
        self.enqueue(response, tag)
            .map_err(|_| ReplyRefused::Unknown)
    }

    /// The application dropped the inbound request in `slot` without answering.
    pub fn abandon_request(&mut self, slot: u64) {
        self.inbound.abandon(slot);
    }

    /// Takes one received frame (a whole message or a stream piece).
    pub fn handle_frame(&mut self, now: Instant, frame: MultiplexMessage) {
        match frame {
            MultiplexMessage::Message(m) => self.handle_message(now, m),
            MultiplexMessage::Stream(s) => self.handle_stream(now, s),
        }
    }

    /// Takes one stream frame and handles the message it completes, if any.
    pub fn handle_stream(&mut self, now: Instant, s: StreamMessage) {
        match self.reassembler.handle(s) {
            Ok(Some(m)) => self.handle_message(now, m),
            Ok(None) => {}
            Err(e) => self.events.push_back(Event::Stream(e)),
        }
    }

    /// Takes one whole received message.
    pub fn handle_message(&mut self, now: Instant, message: NetworkMessage) {
        let event = match message {
            NetworkMessage::DirectSendMsg(m) => Event::Message {
                protocol: m.protocol_id,
                data: m.raw_msg,
            },
            NetworkMessage::RpcRequest(r) => {
                match self.inbound.admit(now, r.request_id, r.priority) {
                    Ok(a) => Event::Request {
                        protocol: r.protocol_id,
                        data: r.raw_request,
                        slot: a.slot,
                        deadline: a.deadline,
                    },
                    Err(_) => Event::RequestRefused {
                        protocol: r.protocol_id,
                        request_id: r.request_id,
                    },
                }
            }
            NetworkMessage::RpcResponse(r) => match self.outbound.complete(r.request_id) {
                Some((_, token)) => Event::RpcDone {
                    request_id: r.request_id,
                    token,
                    result: Ok(r.raw_response),
                },
                None => Event::UnknownResponse(r.request_id),
            },
            NetworkMessage::Error(e) => Event::RemoteError(e),
        };
        self.events.push_back(event);
    }

    /// A received frame did not decode: queue the `ParsingError` reply the original sends.
    /// `tag` comes back with the reply's frame (a completion of no payload bytes), so that the
    /// driver can tell when it is written, or find it among the [`Leftovers`].
    pub fn handle_malformed(&mut self, error: &FrameError, tag: K) {
        let (message, protocol) = error.parsing_error_bytes();
        self.queue.push_back(Transmit {
            message: MultiplexMessage::Message(NetworkMessage::Error(ErrorCode::ParsingError {
                message,
                protocol,
            })),
            completes: Some(Completion { len: 0, tag }),
        });
    }

    /// Expires RPCs whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (request_id, token) in self.outbound.expire(now) {
            self.events.push_back(Event::RpcDone {
                request_id,
                token,
                result: Err(RpcFailure::TimedOut),
            });
        }
        self.inbound.expire(now);
    }

    /// Drops the outbound RPCs whose caller stopped waiting, to free their slots; returns their
    /// ids.
    pub fn cancel_rpcs_where(&mut self, cancelled: impl FnMut(&R) -> bool) -> Vec<RequestId> {
        self.outbound
            .cancel_where(cancelled)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// Marks outbound RPC `id` complete without an event, for a driver that delivered the
    /// response itself; `None` if it was not waiting (expired, cancelled, unknown).
    pub fn complete_rpc(&mut self, id: RequestId) -> Option<R> {
        self.outbound.complete(id).map(|(_, token)| token)
    }

    /// The next frame to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit<K>> {
        let stream_turn = self.queue.is_empty() || self.small_budget == 0;
        if stream_turn && let Some((stream, _)) = self.streams.front_mut() {
            let message = stream.next().expect("finished streams are removed");
            self.small_budget = fragment_size(self.config.max_frame_size);
            let completes = if stream.is_done() {
                self.streams.pop_front().map(|(_, c)| c)
            } else {
                None
            };
            return Some(Transmit { message, completes });
        }
        let t = self.queue.pop_front()?;
        if !self.streams.is_empty() {
            self.small_budget = self.small_budget.saturating_sub(t.message.encoded_len());
        }
        Some(t)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event<R>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Session::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.outbound.next_deadline(), self.inbound.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True while frames wait in [`poll_transmit`](Session::poll_transmit).
    pub fn has_transmit(&self) -> bool {
        !self.queue.is_empty() || !self.streams.is_empty()
    }

    /// Outbound RPCs waiting for a response.
    pub fn outbound_rpcs(&self) -> usize {
        self.outbound.len()
    }

    /// Inbound RPCs waiting for the application.
    pub fn inbound_rpcs(&self) -> usize {
        self.inbound.len()
    }

    /// Ends the session: hands back every RPC still waiting and every message not yet fully
    /// transmitted, so the caller can report each one.
    pub fn close(&mut self) -> Leftovers<R, K> {
        let rpcs = self.outbound.drain();
        let mut messages: Vec<Completion<K>> =
            self.queue.drain(..).filter_map(|t| t.completes).collect();
        messages.extend(self.streams.drain(..).map(|(_, c)| c));
        Leftovers { rpcs, messages }
    }
}

#[cfg(test)]
mod tests;
