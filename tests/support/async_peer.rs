//! The async baseline: the Aptos `Peer` actor's architecture rebuilt on tokio, over syncpeer's
//! sans-IO codec, so that a comparison measures the concurrency architecture and nothing else.
//!
//! Shared by `benches/compare` and `tests/audit_poc.rs` (included with `#[path]`). Dev-only.
//!
//! Three tasks per connection, as in the original (`reference/aptos-peer-behaviour.md` §1):
//!
//! - **main** (`Peer::start`): one `tokio::select!` (random among ready branches) over the
//!   application's `peer_reqs` channel, the socket's read half (through [`FrameDecoder`]), the
//!   completed inbound RPCs (application replies) and the completed outbound RPCs. It owns the
//!   RPC bookkeeping (request id counter from 0, pending map, one oneshot per call) and the
//!   stream reassembly, and pushes every outgoing `NetworkMessage` into `write_reqs`.
//! - **multiplex**: takes `NetworkMessage`s from `write_reqs`; a payload over
//!   `max_frame_size − 64` is cut by [`OutboundStream`] into `stream_msg`, anything else goes to
//!   `msg`. Both channels hold 1024 frames; the task awaits each send (`async_writer.rs`).
//! - **writer**: `select!`s between the next frame (itself a fair choice between `msg` and
//!   `stream_msg`) and the close oneshot. Each frame is encoded with [`encode_frame`] and written
//!   on its own, under the original's 30 s timeout.
//!
//! Shutdown ([`Variant::Original`]) is the original's `do_shutdown`: drop the `write_reqs`
//! sender, then send on the close oneshot at once. The writer's `select!` may take the close
//! before the frames still queued, which are then lost: the race of `reference/audit-report.md`.
//! [`Variant::AuditFix`] is the report's "better solution" (await the multiplex task, then
//! close): every frame is then in the writer's channels, but the writer's `select!` can still
//! pick the close first. [`Variant::Fixed`] also makes the writer drain its channels after the
//! close signal, which loses nothing.
//!
//! Deliberate differences from the original, each one in the original's favour or neutral:
//! the `peer_reqs` and `write_reqs` queues apply backpressure (the original drops the newest,
//! respectively evicts the oldest, when full), so every loss measured comes from the close race
//! alone; inbound handlers are unbounded channels (the bench drains them); there is no Noise
//! layer, no rate limiter, no metrics. The original's set of RPC futures (`FuturesUnordered`)
//! is [`PollSet`], a small hand-written equivalent polled inside the main task.
#![allow(dead_code)]

#[path = "async_writer.rs"]
mod async_writer;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_writer::{multiplex_task, writer_task};
use bytes::Bytes;
use syncpeer::proto::{
    DirectSendMsg, ErrorCode, FrameDecoder, FrameError, MultiplexMessage, NetworkMessage,
    ProtocolId, Reassembler, RequestId, RpcRequest, RpcResponse,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Capacity of `write_reqs`, `msg` and `stream_msg` (the original's 1024).
const CHANNEL_SIZE: usize = 1024;
/// Bytes read per system call (as syncpeer's reader, so only the architecture differs).
const READ_CHUNK: usize = 64 * 1024;

/// Which shutdown the peer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    /// The original: drop `write_reqs`, close the writer at once.
    Original,
    /// The audit report's proposal: await the multiplex task, then close the writer (whose
    /// `select!` is unchanged).
    AuditFix,
    /// Await the multiplex task, and the writer drains its channels before closing.
    Fixed,
}

/// Limits of one async peer (the original's defaults).
#[derive(Clone, Debug)]
pub(crate) struct AsyncConfig {
    pub(crate) variant: Variant,
    pub(crate) max_frame_size: usize,
    pub(crate) max_message_size: usize,
    pub(crate) inbound_rpc_timeout: Duration,
    pub(crate) max_concurrent_inbound_rpcs: usize,
    pub(crate) max_concurrent_outbound_rpcs: usize,
    /// Capacity of the application's request channel (the original: 1024 per protocol).
    pub(crate) peer_reqs_capacity: usize,
}

impl Default for AsyncConfig {
    fn default() -> AsyncConfig {
        AsyncConfig {
            variant: Variant::Original,
            max_frame_size: 4 * 1024 * 1024,
            max_message_size: 64 * 1024 * 1024,
            inbound_rpc_timeout: Duration::from_secs(10),
            max_concurrent_inbound_rpcs: 100,
            max_concurrent_outbound_rpcs: 100,
            peer_reqs_capacity: CHANNEL_SIZE,
        }
    }
}

/// What the application asks of the peer (the original's `PeerRequest`).
#[derive(Debug)]
pub(crate) enum PeerRequest {
    SendDirectSend {
        protocol: ProtocolId,
        data: Bytes,
    },
    SendRpc {
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
        res_tx: oneshot::Sender<Result<Bytes, AsyncRpcError>>,
    },
}

/// Why an outbound RPC failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AsyncRpcError {
    TimedOut,
    TooManyPending,
    /// The peer closed, or the response channel was dropped.
    Cancelled,
}

/// What the peer hands an application (the original's `ReceivedMessage`).
#[derive(Debug)]
pub(crate) enum Received {
    Message {
        protocol: ProtocolId,
        data: Bytes,
    },
    Request {
        protocol: ProtocolId,
        data: Bytes,
        replier: oneshot::Sender<Bytes>,
    },
}

/// Why the main loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AsyncReason {
    RequestedByPeerManager,
    ConnectionClosed,
    InputOutputError,
}

/// What a close achieved, as far as the peer can tell (the remote's count is the truth).
#[derive(Clone, Debug)]
pub(crate) struct AsyncReport {
    pub(crate) reason: AsyncReason,
    /// Frames the writer wrote over the connection's life.
    pub(crate) frames_written: u64,
    /// Frames still in the writer's channels when it stopped (not counting those the
    /// multiplex task moved later, which are lost too).
    pub(crate) frames_discarded: u64,
    /// From the close request to the writer's end.
    pub(crate) duration: Duration,
}

/// Inbound handlers indexed by protocol byte.
pub(crate) type Handlers = Vec<Option<mpsc::UnboundedSender<Received>>>;

/// Builds a handler table from `(protocol, sender)` pairs.
pub(crate) fn handlers(list: Vec<(ProtocolId, mpsc::UnboundedSender<Received>)>) -> Handlers {
    let mut table: Handlers = vec![None; 256];
    for (p, tx) in list {
        table[usize::from(p.0)] = Some(tx);
    }
    table
}

/// The application's side of a running async peer.
#[derive(Debug)]
pub(crate) struct AsyncPeerHandle {
    reqs: mpsc::Sender<PeerRequest>,
    main: JoinHandle<AsyncReason>,
    writer: JoinHandle<(u64, u64)>,
}

impl AsyncPeerHandle {
    /// Starts the three tasks on `rt` for an established `socket`.
    pub(crate) fn spawn(
        rt: &tokio::runtime::Handle,
        socket: std::net::TcpStream,
        config: AsyncConfig,
        handlers: Handlers,
    ) -> io::Result<AsyncPeerHandle> {
        let _guard = rt.enter();
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        let (read_half, write_half) = TcpStream::from_std(socket)?.into_split();
        let (reqs_tx, reqs_rx) = mpsc::channel(config.peer_reqs_capacity);
        let (write_reqs_tx, write_reqs_rx) = mpsc::channel(CHANNEL_SIZE);
        let (msg_tx, msg_rx) = mpsc::channel(CHANNEL_SIZE);
        let (stream_tx, stream_rx) = mpsc::channel(CHANNEL_SIZE);
        let (close_tx, close_rx) = oneshot::channel();
        let writer = rt.spawn(writer_task(
            write_half,
            msg_rx,
            stream_rx,
            close_rx,
            config.max_frame_size,
            config.variant,
        ));
        let multiplex = rt.spawn(multiplex_task(
            write_reqs_rx,
            msg_tx,
            stream_tx,
            config.max_frame_size,
            config.max_message_size,
        ));
        let main = MainLoop {
            decoder: FrameDecoder::new(config.max_frame_size),
            reassembler: Reassembler::new(config.max_frame_size, config.max_message_size),
            config,
            handlers,
            write_reqs: write_reqs_tx,
            pending: std::collections::HashMap::new(),
            next_request_id: 0,
            inbound_rpcs: PollSet::new(),
            outbound_rpcs: PollSet::new(),
        };
        let main = rt.spawn(main.run(read_half, reqs_rx, multiplex, close_tx));
        Ok(AsyncPeerHandle {
            reqs: reqs_tx,
            main,
            writer,
        })
    }

    /// A clone of the request channel. The peer closes once every clone (and this handle) is
    /// gone, as the original closes when the peer manager drops its sender.
    pub(crate) fn requests(&self) -> mpsc::Sender<PeerRequest> {
        self.reqs.clone()
    }

    /// Requests waiting in the `peer_reqs` channel.
    pub(crate) fn queued(&self) -> usize {
        self.reqs.max_capacity() - self.reqs.capacity()
    }

    /// Queues a direct send, waiting while the request channel is full.
    pub(crate) async fn send(&self, protocol: ProtocolId, data: Bytes) -> Result<(), Bytes> {
        send_on(&self.reqs, protocol, data).await
    }

    /// Sends a request and waits for its response.
    pub(crate) async fn rpc(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, AsyncRpcError> {
        rpc_on(&self.reqs, protocol, data, timeout).await
    }

    /// Closes as the original does when the peer manager drops its sender, and waits for the
    /// writer to stop.
    pub(crate) async fn shutdown(self) -> AsyncReport {
        let start = Instant::now();
        drop(self.reqs);
        let reason = self.main.await.unwrap_or(AsyncReason::InputOutputError);
        let (frames_written, frames_discarded) = self.writer.await.unwrap_or((0, 0));
        AsyncReport {
            reason,
            frames_written,
            frames_discarded,
            duration: start.elapsed(),
        }
    }
}

/// [`AsyncPeerHandle::send`] on a cloned request channel.
pub(crate) async fn send_on(
    reqs: &mpsc::Sender<PeerRequest>,
    protocol: ProtocolId,
    data: Bytes,
) -> Result<(), Bytes> {
    reqs.send(PeerRequest::SendDirectSend { protocol, data })
        .await
        .map_err(|e| match e.0 {
            PeerRequest::SendDirectSend { data, .. } | PeerRequest::SendRpc { data, .. } => data,
        })
}

/// [`AsyncPeerHandle::rpc`] on a cloned request channel.
pub(crate) async fn rpc_on(
    reqs: &mpsc::Sender<PeerRequest>,
    protocol: ProtocolId,
    data: Bytes,
    timeout: Duration,
) -> Result<Bytes, AsyncRpcError> {
    let (res_tx, res_rx) = oneshot::channel();
    let req = PeerRequest::SendRpc {
        protocol,
        data,
        timeout,
        res_tx,
    };
    if reqs.send(req).await.is_err() {
        return Err(AsyncRpcError::Cancelled);
    }
    res_rx.await.unwrap_or(Err(AsyncRpcError::Cancelled))
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A set of futures polled together, yielding outputs in completion order: the part of
/// `futures::stream::FuturesUnordered` the original's RPC bookkeeping uses. Every entry is
/// polled on each wake-up; the sets hold at most `max_concurrent_*_rpcs` (100) entries.
pub(crate) struct PollSet<T> {
    futures: Vec<BoxFuture<T>>,
}

impl<T> PollSet<T> {
    fn new() -> PollSet<T> {
        PollSet {
            futures: Vec::new(),
        }
    }

    fn push(&mut self, f: impl Future<Output = T> + Send + 'static) {
        self.futures.push(Box::pin(f));
    }

    fn len(&self) -> usize {
        self.futures.len()
    }

    fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }

    /// The next output; pending forever while empty (guard the `select!` branch).
    async fn next(&mut self) -> T {
        std::future::poll_fn(|cx| {
            for i in 0..self.futures.len() {
                if let Poll::Ready(v) = self.futures[i].as_mut().poll(cx) {
                    drop(self.futures.swap_remove(i));
                    return Poll::Ready(v);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// A completed inbound RPC: the response to write, if the application answered in time.
type InboundDone = Option<(RequestId, u8, Bytes)>;

/// The main task's state. Everything here is touched by that task only.
struct MainLoop {
    config: AsyncConfig,
    handlers: Handlers,
    decoder: FrameDecoder,
    reassembler: Reassembler,
    write_reqs: mpsc::Sender<NetworkMessage>,
    pending: std::collections::HashMap<RequestId, oneshot::Sender<Bytes>>,
    next_request_id: u32,
    inbound_rpcs: PollSet<InboundDone>,
    outbound_rpcs: PollSet<RequestId>,
}

/// One thing the main loop's `select!` produced.
enum Event {
    Request(Option<PeerRequest>),
    Frame(ReadOutcome),
    InboundDone(InboundDone),
    OutboundDone(RequestId),
}

/// What reading the socket produced.
enum ReadOutcome {
    Frame(MultiplexMessage),
    Malformed(FrameError),
    Eof,
    Failed,
}

impl MainLoop {
    async fn run(
        mut self,
        mut read_half: OwnedReadHalf,
        mut reqs: mpsc::Receiver<PeerRequest>,
        multiplex: JoinHandle<()>,
        close_tx: oneshot::Sender<()>,
    ) -> AsyncReason {
        let mut buf = vec![0u8; READ_CHUNK];
        let reason = loop {
            let inbound_idle = self.inbound_rpcs.is_empty();
            let outbound_idle = self.outbound_rpcs.is_empty();
            let event = tokio::select! {
                r = reqs.recv() => Event::Request(r),
                f = next_frame(&mut read_half, &mut self.decoder, &mut buf) => Event::Frame(f),
                d = self.inbound_rpcs.next(), if !inbound_idle => Event::InboundDone(d),
                id = self.outbound_rpcs.next(), if !outbound_idle => Event::OutboundDone(id),
            };
            match event {
                Event::Request(Some(req)) => self.outbound_request(req).await,
                Event::Request(None) => break AsyncReason::RequestedByPeerManager,
                Event::Frame(ReadOutcome::Frame(m)) => self.inbound_frame(m).await,
                Event::Frame(ReadOutcome::Malformed(e)) => {
                    if e.is_fatal() {
                        break AsyncReason::InputOutputError;
                    }
                    let (message, protocol) = e.parsing_error_bytes();
                    let err = NetworkMessage::Error(ErrorCode::ParsingError { message, protocol });
                    let _ = self.write_reqs.send(err).await;
                }
                Event::Frame(ReadOutcome::Eof) => break AsyncReason::ConnectionClosed,
                Event::Frame(ReadOutcome::Failed) => break AsyncReason::InputOutputError,
                Event::InboundDone(Some((request_id, priority, raw_response))) => {
                    let resp = NetworkMessage::RpcResponse(RpcResponse {
                        request_id,
                        priority,
                        raw_response,
                    });
                    let _ = self.write_reqs.send(resp).await;
                }
                Event::InboundDone(None) => {}
                Event::OutboundDone(id) => {
                    self.pending.remove(&id);
                }
            }
        };
        // do_shutdown.
        drop(self.write_reqs);
        if self.config.variant != Variant::Original {
            let _ = multiplex.await;
        }
        let _ = close_tx.send(());
        // Dropping `self` drops the RPC futures: pending callers see `Cancelled`.
        reason
    }

    async fn outbound_request(&mut self, req: PeerRequest) {
        match req {
            PeerRequest::SendDirectSend { protocol, data } => {
                let msg = NetworkMessage::DirectSendMsg(DirectSendMsg {
                    protocol_id: protocol,
                    priority: 0,
                    raw_msg: data,
                });
                let _ = self.write_reqs.send(msg).await;
            }
            PeerRequest::SendRpc {
                protocol,
                data,
                timeout,
                res_tx,
            } => {
                if self.outbound_rpcs.len() >= self.config.max_concurrent_outbound_rpcs {
                    let _ = res_tx.send(Err(AsyncRpcError::TooManyPending));
                    return;
                }
                let request_id = RequestId(self.next_request_id);
                self.next_request_id = self.next_request_id.wrapping_add(1);
                let msg = NetworkMessage::RpcRequest(RpcRequest {
                    protocol_id: protocol,
                    request_id,
                    priority: 0,
                    raw_request: data,
                });
                if self.write_reqs.send(msg).await.is_err() {
                    return;
                }
                let (tx, rx) = oneshot::channel();
                self.pending.insert(request_id, tx);
                self.outbound_rpcs.push(async move {
                    let result = match tokio::time::timeout(timeout, rx).await {
                        Ok(Ok(bytes)) => Ok(bytes),
                        Ok(Err(_)) => Err(AsyncRpcError::Cancelled),
                        Err(_) => Err(AsyncRpcError::TimedOut),
                    };
                    let _ = res_tx.send(result);
                    request_id
                });
            }
        }
    }

    async fn inbound_frame(&mut self, frame: MultiplexMessage) {
        let message = match frame {
            MultiplexMessage::Message(m) => m,
            MultiplexMessage::Stream(s) => match self.reassembler.handle(s) {
                Ok(Some(m)) => m,
                // Incomplete, or a stream error: the original only logs those.
                Ok(None) | Err(_) => return,
            },
        };
        match message {
            NetworkMessage::DirectSendMsg(m) => {
                if let Some(h) = &self.handlers[usize::from(m.protocol_id.0)] {
                    let _ = h.send(Received::Message {
                        protocol: m.protocol_id,
                        data: m.raw_msg,
                    });
                }
            }
            NetworkMessage::RpcRequest(r) => {
                if self.inbound_rpcs.len() >= self.config.max_concurrent_inbound_rpcs {
                    return;
                }
                let Some(h) = &self.handlers[usize::from(r.protocol_id.0)] else {
                    return;
                };
                let (replier, rx) = oneshot::channel();
                let delivered = h.send(Received::Request {
                    protocol: r.protocol_id,
                    data: r.raw_request,
                    replier,
                });
                if delivered.is_err() {
                    return;
                }
                let timeout = self.config.inbound_rpc_timeout;
                let (request_id, priority) = (r.request_id, r.priority);
                self.inbound_rpcs.push(async move {
                    match tokio::time::timeout(timeout, rx).await {
                        Ok(Ok(bytes)) => Some((request_id, priority, bytes)),
                        _ => None,
                    }
                });
            }
            NetworkMessage::RpcResponse(r) => {
                if let Some(tx) = self.pending.remove(&r.request_id) {
                    let _ = tx.send(r.raw_response);
                }
            }
            NetworkMessage::Error(_) => {}
        }
    }
}

/// The next frame from the socket. Cancel-safe: the only await is `read`, and a frame decoded
/// is returned in the same poll.
async fn next_frame(
    half: &mut OwnedReadHalf,
    decoder: &mut FrameDecoder,
    buf: &mut [u8],
) -> ReadOutcome {
    loop {
        match decoder.decode() {
            Ok(Some(m)) => return ReadOutcome::Frame(m),
            Ok(None) => {}
            Err(e) => return ReadOutcome::Malformed(e),
        }
        match half.read(buf).await {
            Ok(0) if decoder.is_idle() => return ReadOutcome::Eof,
            Ok(0) | Err(_) => return ReadOutcome::Failed,
            Ok(n) => decoder.extend(&buf[..n]),
        }
    }
}
