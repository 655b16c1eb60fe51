//! The lane: the one ordered queue of encoded frames in front of the socket.
//!
//! Everything a connection writes passes through it in wire order: frames the mux encodes
//! (RPC traffic, stream fragments, anything queued through the outbox) and small direct sends
//! that application threads encode themselves (the fast path). It replaces the frames channel
//! drawn in DESIGN.md with the same FIFO guarantee, for two reasons measured on a 2-core VM:
//!
//! - **Throughput.** A direct send through the outbox costs a channel slot, a wake-up of the
//!   mux and a second encoding pass there; the mux thread was the bottleneck at about 2.5
//!   million 64-byte messages per second. On the fast path the sending thread encodes the frame
//!   into the lane under one short lock, and the writer takes whatever accumulated in one swap.
//! - **Latency.** When the connection is idle and the writer is parked, the thread that appends
//!   writes the bytes itself (a *direct write*): no thread is woken on the way out, where
//!   waking the writer on another core costs about 25 µs here.
//!
//! # Order
//!
//! The lane's order is append order. Per thread, acceptance order must be wire order
//! (invariant 4), but a command in the outbox is not in the lane yet. So `ahead` counts what was
//! accepted through the outbox (or the replies channel) and not yet appended by the mux; while
//! it is non-zero the fast path is refused and sends take the outbox, behind it. The mux
//! releases its count only when everything it took is in the lane.
//!
//! # Who writes
//!
//! `writing` says someone owns the socket's write side: the writer thread while it holds a
//! batch, or an appender doing a direct write. A direct write happens only when the writer is
//! parked, the lane was empty and the socket has been idle for [`DIRECT_IDLE`]: a thread that
//! sends back to back never writes one message per system call, it leaves the batching to the
//! writer. What a direct write cannot finish (`WouldBlock`, an error, a short write) goes back
//! to the front of the lane for the writer, which owns waiting, deadlines and error handling.
//!
//! # Room
//!
//! The fast path holds at most `outbox_capacity` messages between two takes by the writer; a
//! full lane makes `send` wait on `room` (woken when the writer takes the batch, by the close,
//! or at the sender's deadline) and `try_send` report `Full`. It does not send them through
//! the outbox instead: under overload that put the mux's per-message work back on the path,
//! and its CPU time was taken from the receiving side of the same machine. The mux's own
//! appends stop at [`HIGH_WATER`] bytes; it then waits on `room_rx` and stops reading the
//! outbox, which is how the slow path backs up.
//!
//! # Close
//!
//! `open` refuses the fast path once a close has started (the outbox gate refuses the rest).
//! After the mux has appended its last frame, `closing` is set: the writer writes what is
//! left, then half-closes. That flag is `DrainAndClose` from DESIGN.md, kept in the same FIFO.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::PeerMetrics;
use super::handle::ReceiptTx;
use super::metrics::Counters;
use super::shared::{Batch, Shared, write_batches};
use super::socket::Half;
use crate::proto::Transmit;
use crate::proto::stream::fragment_size;
use crate::proto::{Completion, DirectSendMsg, MultiplexMessage, NetworkMessage, ProtocolId};

/// Bytes queued in the lane past which the mux stops appending (it then stops taking commands
/// from the outbox: backpressure for the slow path starts here).
pub(crate) const HIGH_WATER: usize = 256 * 1024;
/// Largest batch written directly by the thread that appended it.
const DIRECT_WRITE_MAX: usize = 64 * 1024;
/// How long the socket must have been idle before an appender writes directly.
const DIRECT_IDLE: Duration = Duration::from_micros(10);

#[derive(Debug)]
pub(crate) struct Lane {
    st: Mutex<LaneState>,
    /// Senders waiting for room on the fast path.
    room: Condvar,
    /// Fast-path messages the lane holds at most (`outbox_capacity`).
    capacity: usize,
    /// Rung to wake the parked writer (capacity 1: a ring is never lost, never blocks).
    bell_tx: Sender<()>,
    bell_rx: Receiver<()>,
    /// Rung when the writer takes a batch while the mux waits for room.
    room_tx: Sender<()>,
    pub(crate) room_rx: Receiver<()>,
    /// Largest payload that fits one frame: larger ones are streamed by the mux.
    single_frame_max: usize,
}

#[derive(Debug)]
struct LaneState {
    open: bool,
    ahead: u64,
    batch: Batch,
    /// Scratch for encoding small frames; sealed into `batch` before it is taken.
    head: BytesMut,
    /// Fast-path messages and payload bytes queued since the writer last took the batch, not
    /// yet added to the counters; the message count is also how full the fast path is.
    accepted: (u64, u64),
    /// Senders waiting on `room`.
    room_waiters: usize,
    writing: bool,
    writer_parked: bool,
    mux_waiting: bool,
    closing: bool,
    idle_since: Instant,
    /// The write half, for direct writes; dropped when the writer exits, so that the socket
    /// closes with the connection's threads and not with the last handle.
    half: Option<Arc<Half>>,
}

/// A direct send the fast path did not take, handed back.
pub(crate) struct NotTaken {
    pub(crate) data: Bytes,
    pub(crate) receipt: Option<ReceiptTx>,
    pub(crate) why: Why,
}

/// Why the fast path did not take a message, or why waiting for room ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The close has started.
    Closed,
    /// The lane holds `outbox_capacity` messages: wait for room (or report `Full`).
    Full,
    /// Something accepted earlier is still in the outbox, or the payload needs streaming: the
    /// message goes through the outbox.
    Behind,
    /// The deadline passed while waiting for room.
    Timeout,
}

impl Lane {
    pub(crate) fn new(half: Arc<Half>, max_frame_size: usize, capacity: usize) -> Lane {
        let (bell_tx, bell_rx) = crossbeam_channel::bounded(1);
        let (room_tx, room_rx) = crossbeam_channel::bounded(1);
        Lane {
            st: Mutex::new(LaneState::new(Some(half))),
            room: Condvar::new(),
            capacity,
            bell_tx,
            bell_rx,
            room_tx,
            room_rx,
            single_frame_max: fragment_size(max_frame_size),
        }
    }

    /// Refuses the fast path from now on (the close has started), and wakes the senders
    /// waiting for room so that they are refused too.
    pub(crate) fn close_input(&self) {
        self.st.lock().open = false;
        self.room.notify_all();
    }

    /// Waits until the fast path has room, the close starts, or `deadline`.
    pub(crate) fn wait_room(&self, deadline: Option<Instant>) -> Result<(), Why> {
        let mut st = self.st.lock();
        loop {
            if !st.open {
                return Err(Why::Closed);
            }
            if st.queued() < self.capacity {
                return Ok(());
            }
            st.room_waiters += 1;
            let timed_out = match deadline {
                None => {
                    self.room.wait(&mut st);
                    false
                }
                Some(d) => self.room.wait_until(&mut st, d).timed_out(),
            };
            st.room_waiters -= 1;
            if timed_out && st.open && st.queued() >= self.capacity {
                return Err(Why::Timeout);
            }
        }
    }

    /// A snapshot of `counters` that includes the fast-path messages not yet counted, with
    /// `outbox_depth` set to the messages queued in the lane. Taken under the lane's lock, so
    /// no batch is taken (and counted) halfway through.
    pub(crate) fn snapshot(&self, counters: &Counters) -> PeerMetrics {
        let st = self.st.lock();
        let mut m = counters.snapshot();
        let (n, bytes) = st.accepted;
        m.messages_accepted += n;
        m.bytes_accepted += bytes;
        m.direct_sends_accepted += n;
        m.outbox_depth = n;
        m
    }

    /// Before a command goes into the outbox: holds the fast path back until the mux has
    /// appended it. False once the close has started.
    pub(crate) fn begin_slow(&self) -> bool {
        let mut st = self.st.lock();
        if st.open {
            st.ahead += 1;
        }
        st.open
    }

    /// Like [`begin_slow`](Lane::begin_slow) for a response, which is accepted during the
    /// close too (the replies channel decides).
    pub(crate) fn hold(&self) {
        self.st.lock().ahead += 1;
    }

    /// The outbox (or the replies channel) refused what [`begin_slow`](Lane::begin_slow) or
    /// [`hold`](Lane::hold) announced. (What the mux takes, it releases when appending.)
    pub(crate) fn cancel_slow(&self) {
        let mut st = self.st.lock();
        st.ahead = st.ahead.saturating_sub(1);
    }

    /// The writer has exited: no more direct writes.
    pub(crate) fn drop_socket(&self) {
        self.st.lock().half = None;
    }

    /// Marks the end of the stream of frames: the writer half-closes once the lane is empty.
    pub(crate) fn close_writer(&self) {
        let mut st = self.st.lock();
        st.closing = true;
        self.ring_if_parked(&mut st);
    }
}

impl LaneState {
    fn new(half: Option<Arc<Half>>) -> LaneState {
        LaneState {
            open: true,
            ahead: 0,
            batch: Batch::default(),
            head: BytesMut::new(),
            accepted: (0, 0),
            room_waiters: 0,
            writing: false,
            writer_parked: false,
            mux_waiting: false,
            closing: false,
            idle_since: Instant::now(),
            half,
        }
    }

    /// Fast-path messages queued since the writer last took the batch (they are counted as
    /// accepted when it does).
    fn queued(&self) -> usize {
        self.accepted.0 as usize
    }

    /// Seals and takes the batch, counting the fast-path messages in it as accepted (before
    /// any of them can be counted as written), and makes room for waiting senders.
    fn take(&mut self, counters: &Counters, room: &Condvar) -> Batch {
        self.batch.seal(&mut self.head);
        if self.room_waiters > 0 {
            room.notify_all();
        }
        let (n, bytes) = std::mem::take(&mut self.accepted);
        if n > 0 {
            Counters::add(&counters.messages_accepted, n);
            Counters::add(&counters.bytes_accepted, bytes);
            Counters::add(&counters.direct_sends_accepted, n);
        }
        std::mem::take(&mut self.batch)
    }

    /// Appends a sealed batch behind what the lane holds.
    fn append(&mut self, other: Batch) {
        self.batch.seal(&mut self.head);
        self.batch.append(other);
    }

    /// Puts a taken, partly written batch back in front of what was appended since it was
    /// taken. Small frames appended meanwhile may still sit in `head`: they are sealed behind
    /// the later ones first, so that the wire order is kept.
    fn put_back(&mut self, front: Batch) {
        self.batch.seal(&mut self.head);
        let behind = std::mem::replace(&mut self.batch, front);
        self.batch.append(behind);
    }
}

impl Shared {
    /// The fast path of a direct send: encodes it into the lane if nothing accepted earlier is
    /// still in the outbox, the payload fits one frame and the lane has room.
    pub(crate) fn fast_send(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        receipt: Option<ReceiptTx>,
    ) -> Result<(), NotTaken> {
        let lane = &self.lane;
        let mut st = lane.st.lock();
        let why = if !st.open {
            Some(Why::Closed)
        } else if st.ahead > 0 || data.len() > lane.single_frame_max {
            Some(Why::Behind)
        } else if st.queued() >= lane.capacity {
            Some(Why::Full)
        } else {
            None
        };
        if let Some(why) = why {
            return Err(NotTaken { data, receipt, why });
        }
        let len = data.len();
        st.accepted.0 += 1;
        st.accepted.1 += len as u64;
        let was_empty = st.batch.is_empty();
        let t = Transmit {
            message: MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: protocol,
                priority: 0,
                raw_msg: data,
            })),
            completes: Some(Completion { len, tag: receipt }),
        };
        let st_ref = &mut *st;
        if let Err(e) = st_ref
            .batch
            .push(t, self.config.max_frame_size, &mut st_ref.head)
        {
            // The payload fits one frame by the check above: a bug if it happens. The message
            // was accepted, so it is accounted for.
            log::error!("peer {}: frame not sent: {e}", self.remote);
            st.accepted.0 -= 1;
            st.accepted.1 -= len as u64;
            self.counters.accept(len);
            Counters::add(&self.counters.direct_sends_accepted, 1);
            Counters::add(&self.counters.messages_abandoned, 1);
            Counters::add(&self.counters.bytes_abandoned, len as u64);
            return Ok(());
        }
        self.after_append(st, was_empty);
        Ok(())
    }

    /// The mux appends its sealed batch. `released` commands are fully in the lane once this
    /// batch is (the session holds nothing more). False, with `out` untouched, if the lane is
    /// full and `force` is not set: the mux then waits on `room_rx`.
    pub(crate) fn append_from_mux(&self, out: &mut Batch, released: u64, force: bool) -> bool {
        let mut st = self.lane.st.lock();
        if !force && st.batch.len >= HIGH_WATER {
            st.mux_waiting = true;
            return false;
        }
        st.ahead = st.ahead.saturating_sub(released);
        if out.is_empty() {
            return true;
        }
        let was_empty = st.batch.is_empty();
        st.append(std::mem::take(out));
        self.after_append(st, was_empty);
        true
    }

    /// After an append: wakes the writer if it is parked, or writes directly if the
    /// connection was idle (see the module docs).
    fn after_append(&self, mut st: MutexGuard<'_, LaneState>, was_empty: bool) {
        if st.writing || !st.writer_parked {
            // Whoever writes now looks at the lane again before parking.
            return;
        }
        let half = match &st.half {
            Some(h) if was_empty => h.clone(),
            _ => return self.lane.ring_if_parked(&mut st),
        };
        let direct = was_empty
            && st.batch.len <= DIRECT_WRITE_MAX
            && !self.is_aborted()
            && st.idle_since.elapsed() >= DIRECT_IDLE;
        if !direct {
            self.lane.ring_if_parked(&mut st);
            return;
        }
        st.writing = true;
        let mut batch = st.take(&self.counters, &self.lane.room);
        drop(st);
        let complete = write_some(&half, &mut batch, &self.counters);
        drop(half);
        let mut st = self.lane.st.lock();
        st.writing = false;
        st.idle_since = Instant::now();
        if complete {
            Counters::add(&self.counters.direct_batches, 1);
        } else {
            // Back to the front: the writer finishes it, or reports why it cannot.
            st.put_back(batch);
        }
        if !st.batch.is_empty() || st.closing {
            self.lane.ring_if_parked(&mut st);
        }
    }

    /// The writer's wait: the next batch to write, or `None` once the lane is closed and
    /// empty.
    pub(crate) fn next_batch(&self) -> Option<Batch> {
        let lane = &self.lane;
        let mut st = lane.st.lock();
        loop {
            if !st.writing {
                if !st.batch.is_empty() {
                    st.writing = true;
                    if st.mux_waiting {
                        st.mux_waiting = false;
                        let _ = lane.room_tx.try_send(());
                    }
                    return Some(st.take(&self.counters, &lane.room));
                }
                if st.closing {
                    return None;
                }
            }
            st.writer_parked = true;
            drop(st);
            // The lane holds the sender: never disconnected.
            let _ = lane.bell_rx.recv();
            st = lane.st.lock();
        }
    }

    /// The writer has finished with its batch (written or abandoned).
    pub(crate) fn done_writing(&self) {
        let mut st = self.lane.st.lock();
        st.writing = false;
        st.idle_since = Instant::now();
    }
}

impl Lane {
    fn ring_if_parked(&self, st: &mut LaneState) {
        if st.writer_parked {
            st.writer_parked = false;
            let _ = self.bell_tx.try_send(());
        }
    }
}

/// Writes without waiting: true if the whole batch went out. Errors are left for the writer to
/// meet again and report.
fn write_some(half: &Half, batch: &mut Batch, counters: &Counters) -> bool {
    loop {
        match write_batches(half, std::slice::from_mut(batch), counters) {
            Ok(_) if batch.is_written() => return true,
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(st: &mut LaneState, payload: &[u8]) {
        let t = Transmit {
            message: MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: ProtocolId(2),
                priority: 0,
                raw_msg: Bytes::copy_from_slice(payload),
            })),
            completes: Some(Completion {
                len: payload.len(),
                tag: None,
            }),
        };
        st.batch.push(t, 1 << 20, &mut st.head).unwrap();
    }

    /// Every payload in `batch` (written or not), decoded in order, as (length, first byte).
    fn payloads(batch: &Batch) -> Vec<(usize, u8)> {
        let mut decoder = crate::proto::FrameDecoder::new(1 << 20);
        for chunk in &batch.chunks {
            decoder.extend(chunk);
        }
        let mut out = Vec::new();
        while let Some(MultiplexMessage::Message(m)) = decoder.decode().unwrap() {
            out.push((m.data().len(), m.data()[0]));
        }
        assert!(decoder.is_idle(), "whole frames only");
        out
    }

    /// A direct write took the lane's batch and wrote part of it; meanwhile a large frame
    /// (a chunk of its own) and small ones (still in `head`) were appended. Putting the rest
    /// back keeps the wire order and every message's mark.
    #[test]
    fn a_partly_written_batch_goes_back_in_front_in_order() {
        let counters = Counters::default();
        let room = Condvar::new();
        let mut st = LaneState::new(None);
        push(&mut st, b"one");
        push(&mut st, b"two");
        let mut taken = st.take(&counters, &room);
        // "one" and part of "two" are written.
        let mut done = (0, 0);
        taken.advance(taken.marks[0].end + 4, &mut done);
        assert_eq!(done.0, 1);
        push(&mut st, b"three");
        push(&mut st, &[4u8; 2000]);
        push(&mut st, b"five");
        st.put_back(taken);
        let mut batch = st.take(&counters, &room);
        let expected = [(3, b'o'), (3, b't'), (5, b't'), (2000, 4), (4, b'f')];
        assert_eq!(payloads(&batch), expected);
        // Finishing the write resolves the four messages left, the last at the very end.
        let mut done = (0, 0);
        batch.advance(usize::MAX, &mut done);
        assert_eq!(done.0, 4);
        assert!(batch.is_written());
        assert_eq!(batch.marks.last().unwrap().end, batch.len);
    }
}
