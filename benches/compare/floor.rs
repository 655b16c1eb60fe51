//! The floor: the same workloads and the same framing (`encode_frame_split`, `FrameDecoder`,
//! `OutboundStream`, `Reassembler`) over a bare blocking std socket, with no library threads.
//! The application thread encodes and writes itself; one-way senders pack frames into 64 KiB
//! writes (large payloads go out as their own slice, uncopied), which is as good as batching
//! gets. Latency writes each frame at once.

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Instant;

use bytes::BytesMut;
use hdrhistogram::Histogram;
use syncpeer::Bytes;
use syncpeer::PeerConfig;
use syncpeer::proto::codec::encode_frame_split;
use syncpeer::proto::stream::fragment_size;
use syncpeer::proto::{
    DirectSendMsg, FrameDecoder, MultiplexMessage, NetworkMessage, OutboundStream, Reassembler,
    RequestId, RpcRequest, RpcResponse, StreamId,
};

use crate::common::{DIRECT, Kind, RPC, ShutdownRun, Trips, histogram, payload, record, tcp_pair};

/// Bytes packed before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// Bytes read per system call.
const READ_CHUNK: usize = 64 * 1024;
/// Most slices per `writev`.
const MAX_IOV: usize = 64;

/// One end of a framed blocking connection.
struct Framed {
    stream: TcpStream,
    max_frame_size: usize,
    max_message_size: usize,
    decoder: FrameDecoder,
    reassembler: Reassembler,
    read_buf: Vec<u8>,
    head: BytesMut,
    chunks: Vec<Bytes>,
    queued: usize,
    next_stream: u32,
}

impl Framed {
    fn new(stream: TcpStream) -> Framed {
        let c = PeerConfig::default();
        Framed {
            stream,
            max_frame_size: c.max_frame_size,
            max_message_size: c.max_message_size,
            decoder: FrameDecoder::new(c.max_frame_size),
            reassembler: Reassembler::new(c.max_frame_size, c.max_message_size),
            read_buf: vec![0; READ_CHUNK],
            head: BytesMut::new(),
            chunks: Vec::new(),
            queued: 0,
            next_stream: 0,
        }
    }

    /// Encodes `m` (streamed if too large for one frame); writes once a batch is full.
    fn queue(&mut self, m: NetworkMessage) {
        if m.data_len() > fragment_size(self.max_frame_size) {
            let id = StreamId(self.next_stream);
            self.next_stream = self.next_stream.wrapping_add(1);
            let s = OutboundStream::new(id, m, self.max_frame_size, self.max_message_size)
                .expect("message within max_message_size");
            for frame in s {
                self.queue_frame(&frame);
            }
        } else {
            self.queue_frame(&MultiplexMessage::Message(m));
        }
    }

    fn queue_frame(&mut self, frame: &MultiplexMessage) {
        let before = self.head.len();
        let big = encode_frame_split(frame, self.max_frame_size, &mut self.head)
            .expect("frame within max_frame_size");
        self.queued += self.head.len() - before;
        if let Some(payload) = big {
            self.queued += payload.len();
            self.chunks.push(self.head.split().freeze());
            self.chunks.push(payload);
        }
        if self.queued >= WRITE_BATCH {
            self.flush();
        }
    }

    /// Writes everything queued.
    fn flush(&mut self) {
        if !self.head.is_empty() {
            self.chunks.push(self.head.split().freeze());
        }
        let (mut i, mut off) = (0, 0);
        while i < self.chunks.len() {
            let slices: Vec<IoSlice<'_>> = self.chunks[i..]
                .iter()
                .take(MAX_IOV)
                .enumerate()
                .map(|(k, c)| IoSlice::new(if k == 0 { &c[off..] } else { c }))
                .collect();
            let mut n = match self.stream.write_vectored(&slices) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("floor write failed: {e}"),
            };
            while n > 0 {
                let left = self.chunks[i].len() - off;
                if n >= left {
                    n -= left;
                    i += 1;
                    off = 0;
                } else {
                    off += n;
                    n = 0;
                }
            }
        }
        self.chunks.clear();
        self.queued = 0;
    }

    /// The next whole message, `None` at EOF.
    fn read(&mut self) -> Option<NetworkMessage> {
        loop {
            match self.decoder.decode().expect("well-formed frames") {
                Some(MultiplexMessage::Message(m)) => return Some(m),
                Some(MultiplexMessage::Stream(s)) => {
                    if let Some(m) = self.reassembler.handle(s).expect("well-formed stream") {
                        return Some(m);
                    }
                    continue;
                }
                None => {}
            }
            match self.stream.read(&mut self.read_buf) {
                Ok(0) => return None,
                Ok(n) => self.decoder.extend(&self.read_buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("floor read failed: {e}"),
            }
        }
    }
}

fn direct(data: Bytes) -> NetworkMessage {
    NetworkMessage::DirectSendMsg(DirectSendMsg {
        protocol_id: DIRECT,
        priority: 0,
        raw_msg: data,
    })
}

/// Echoes direct sends and answers RPC requests until EOF.
fn echo(stream: TcpStream) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut f = Framed::new(stream);
        while let Some(m) = f.read() {
            let reply = match m {
                NetworkMessage::DirectSendMsg(d) => direct(d.raw_msg),
                NetworkMessage::RpcRequest(r) => NetworkMessage::RpcResponse(RpcResponse {
                    request_id: r.request_id,
                    priority: r.priority,
                    raw_response: r.raw_request,
                }),
                _ => continue,
            };
            f.queue(reply);
            f.flush();
        }
    })
}

/// Closed-loop round trips; the first `warmup` are not recorded.
pub(crate) fn latency(kind: Kind, size: usize, trips: Trips) -> Histogram<u64> {
    let (a, b) = tcp_pair();
    let server = echo(b);
    let mut f = Framed::new(a);
    let data = payload(size);
    let mut h = histogram();
    let started = Instant::now();
    for i in (0..).take_while(|&i| trips.go_on(i, started)) {
        let start = Instant::now();
        let m = match kind {
            Kind::Direct => direct(data.clone()),
            Kind::Rpc => NetworkMessage::RpcRequest(RpcRequest {
                protocol_id: RPC,
                request_id: RequestId(i as u32),
                priority: 0,
                raw_request: data.clone(),
            }),
        };
        f.queue(m);
        f.flush();
        let reply = f.read().expect("echo");
        debug_assert_eq!(reply.data_len(), size);
        if trips.records(i) {
            record(&mut h, start);
        }
    }
    f.stream.shutdown(Shutdown::Write).expect("half-close");
    server.join().expect("echo thread");
    h
}

/// Counts messages until EOF: (count, when the last arrived).
fn count(stream: TcpStream) -> thread::JoinHandle<(u64, Instant)> {
    thread::spawn(move || {
        let mut f = Framed::new(stream);
        let mut n = 0;
        let mut last = Instant::now();
        while f.read().is_some() {
            n += 1;
            last = Instant::now();
        }
        (n, last)
    })
}

/// Sends `n` messages then half-closes; returns (start, half-close call, half-close done).
fn send_all(stream: TcpStream, size: usize, n: usize) -> (Instant, Instant, Instant) {
    let mut f = Framed::new(stream);
    let data = payload(size);
    let start = Instant::now();
    for _ in 0..n {
        f.queue(direct(data.clone()));
    }
    let close = Instant::now();
    f.flush();
    f.stream.shutdown(Shutdown::Write).expect("half-close");
    (start, close, Instant::now())
}

/// One-way sends of `n` messages of `size` bytes: seconds until the remote has all.
pub(crate) fn throughput(size: usize, n: usize) -> f64 {
    let (a, b) = tcp_pair();
    let counter = count(b);
    let (start, _, _) = send_all(a, size, n);
    let (received, last) = counter.join().expect("counter thread");
    assert_eq!(received, n as u64);
    (last - start).as_secs_f64()
}

/// The queue-then-close workload: there is no queue, so the "close" is the final flush and
/// half-close.
pub(crate) fn shutdown(size: usize, n: usize) -> ShutdownRun {
    let (a, b) = tcp_pair();
    let counter = count(b);
    let (start, close, closed) = send_all(a, size, n);
    let (received, last) = counter.join().expect("counter thread");
    ShutdownRun {
        accepted: n as u64,
        received,
        queued_at_close: 0,
        close: closed - close,
        total: last.saturating_duration_since(start),
    }
}
