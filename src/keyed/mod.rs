//! A keyed, bounded, never-blocking multi-producer channel with per-key overflow policies and
//! round-robin fairness between keys: the thread-based counterpart of Aptos' `aptos_channel`
//! over a `PerKeyQueue`. This file owns the public handles ([`Sender`], [`Receiver`]), the
//! locking, blocking receives, feedback, disconnection and the select doorbell; the data
//! structure lives in `queue.rs` and the error types in `error.rs`.
//!
//! # Semantics
//!
//! * Every key has its own sub-queue holding at most `capacity_per_key` messages.
//! * When a sub-queue is full, [`QueueStyle::Fifo`] drops the *new* message, while
//!   [`QueueStyle::Lifo`] and [`QueueStyle::Klast`] evict the *oldest* one and append the new
//!   one. [`Sender::push`] reports which happened through [`Pushed`].
//! * Within a key, FIFO and KLAST deliver oldest-first, LIFO newest-first.
//! * Between keys, delivery is round-robin over the keys that have pending messages.
//! * [`Sender::push`] never blocks and fails only when the [`Receiver`] is gone.
//! * The receiver drains everything queued before it reports that all senders are gone.
//! * A key's sub-queue is freed as soon as it becomes empty, so a stream of short-lived keys
//!   does not grow memory.
//!
//! # As a connection's handler
//!
//! A [`Sender`] keyed by [`HandlerKey`](crate::HandlerKey) can be a peer's or a network's
//! handler (`PeerBuilder::handler`): the connection pushes each inbound message under
//! `(remote, protocol)`, so one busy peer cannot crowd out the others. Which message a full
//! sub-queue costs depends on the style, and the connection counts each such message once in
//! its `dropped_handler_full` (in [`PeerMetrics`](crate::PeerMetrics), the
//! [`DrainReport`](crate::DrainReport)'s `receive_drops` and
//! [`Network::totals`](crate::Network::totals)):
//!
//! | Style | A push to a full sub-queue | Counted by the connection |
//! |---|---|---|
//! | [`QueueStyle::Fifo`] | drops the new message | one drop |
//! | [`QueueStyle::Klast`] | evicts the key's oldest message, queues the new one | one drop, no delivery |
//! | [`QueueStyle::Lifo`] | evicts the key's oldest message, queues the new one | one drop, no delivery |
//!
//! An evicting push counts no delivery because the queue holds as many messages as before:
//! the connection's delivered count is then what stays for the application to take. A push
//! to a queue whose receiver is gone is counted as a drop too. What the application removes
//! itself ([`Receiver::clear`], dropping the receiver with messages queued) was delivered,
//! and is not counted by the connection.
//!
//! # Waiting in `select!`
//!
//! [`Receiver::ready`] exposes a crossbeam "doorbell" to put in a `select!` next to other
//! channels; see its documentation for the protocol and why no wake-up is lost.
//!
//! # Example
//!
//! ```
//! use syncpeer::keyed::{self, Pushed, QueueStyle};
//!
//! let (tx, rx) = keyed::channel(QueueStyle::Fifo, 2)?;
//! tx.push("a", 1).unwrap();
//! tx.push("a", 2).unwrap();
//! assert_eq!(tx.push("a", 3).unwrap(), Pushed::DroppedNew(3)); // "a" is full
//! tx.push("b", 10).unwrap();
//! drop(tx);
//!
//! let received: Vec<_> = std::iter::from_fn(|| rx.recv().ok()).collect();
//! assert_eq!(received, [("a", 1), ("b", 10), ("a", 2)]);
//! # Ok::<(), keyed::InvalidCapacity>(())
//! ```

mod error;
mod queue;

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

pub use self::error::{InvalidCapacity, RecvError, RecvTimeoutError, SendError, TryRecvError};
use self::queue::{Entry, PerKeyQueue, PushOutcome};

/// What a full per-key sub-queue does with one more message, and which end pops first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueStyle {
    /// Oldest first; when full, the new message is dropped.
    Fifo,
    /// Newest first; when full, the oldest message is evicted.
    Lifo,
    /// Oldest first; when full, the oldest message is evicted ("keep last").
    Klast,
}

/// The fate of a message pushed with [`Sender::push_with_feedback`], reported once on its
/// feedback channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// The receiver took the message.
    Dequeued,
    /// The message was dropped: refused by a full FIFO sub-queue, evicted by a later push,
    /// removed by [`Receiver::clear`], or still queued when the receiver was dropped.
    Dropped,
}

/// What a successful push did. Returned so callers can count drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed<T> {
    /// The message was queued and nothing was dropped.
    Queued,
    /// The key's FIFO sub-queue was full: the new message was not queued and is handed back.
    DroppedNew(T),
    /// The key's LIFO or KLAST sub-queue was full: the new message was queued and the oldest
    /// message of that key, handed back here, was evicted.
    EvictedOldest(T),
}

impl<T> Pushed<T> {
    /// Whether the pushed message is now in the queue (true unless [`Pushed::DroppedNew`]).
    pub fn is_queued(&self) -> bool {
        !matches!(self, Self::DroppedNew(_))
    }

    /// The message this push cost, whether the new one or an evicted one, if any.
    pub fn into_dropped(self) -> Option<T> {
        match self {
            Self::Queued => None,
            Self::DroppedNew(msg) | Self::EvictedOldest(msg) => Some(msg),
        }
    }
}

/// Creates a keyed channel whose sub-queues hold at most `capacity_per_key` messages each.
///
/// # Errors
///
/// [`InvalidCapacity`] if `capacity_per_key` is zero.
#[expect(
    clippy::type_complexity,
    reason = "the (Sender, Receiver) pair inside a Result reads plainer than an alias"
)]
pub fn channel<K, T>(
    style: QueueStyle,
    capacity_per_key: usize,
) -> Result<(Sender<K, T>, Receiver<K, T>), InvalidCapacity>
where
    K: Eq + Hash + Clone,
{
    if capacity_per_key == 0 {
        return Err(InvalidCapacity);
    }
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: PerKeyQueue::new(style, capacity_per_key),
            senders: 1,
            receiver_alive: true,
        }),
        available: Condvar::new(),
    });
    // One slot: however many pushes ring, at most one token waits, so the doorbell never
    // blocks a sender and never piles up.
    let (bell_tx, bell_rx) = crossbeam_channel::bounded(1);
    let sender = Sender {
        shared: Arc::clone(&shared),
        doorbell: bell_tx,
    };
    let receiver = Receiver {
        shared,
        doorbell: bell_rx,
    };
    Ok((sender, receiver))
}

/// Everything behind the lock. Counters live here, not in atomics, so that "empty and no
/// senders" is observed in one consistent snapshot.
struct State<K, T> {
    queue: PerKeyQueue<K, T>,
    /// Live [`Sender`] handles; zero means disconnected once the queue is drained.
    senders: usize,
    receiver_alive: bool,
}

struct Shared<K, T> {
    state: Mutex<State<K, T>>,
    /// Signalled on every queued message and when the last sender goes; waited on by the
    /// blocking receives.
    available: Condvar,
}

/// The pushing half of a keyed channel. Cloning it adds a sender; the channel disconnects when
/// the last clone is dropped.
pub struct Sender<K, T> {
    shared: Arc<Shared<K, T>>,
    /// Each handle owns one doorbell sender, so the doorbell disconnects (and wakes a `select!`)
    /// exactly when the last handle is gone.
    doorbell: crossbeam_channel::Sender<()>,
}

impl<K: Eq + Hash + Clone, T> Sender<K, T> {
    /// Queues `msg` under `key`. Never blocks.
    ///
    /// A full sub-queue is not an error: the returned [`Pushed`] says which message, if any,
    /// was dropped.
    ///
    /// # Errors
    ///
    /// [`SendError`] holding `(key, msg)` if the [`Receiver`] has been dropped.
    pub fn push(&self, key: K, msg: T) -> Result<Pushed<T>, SendError<(K, T)>> {
        self.push_entry(
            key,
            Entry {
                msg,
                feedback: None,
            },
        )
    }

    /// Like [`push`](Self::push), and later reports on `feedback` whether this message was
    /// received ([`Delivery::Dequeued`]) or dropped ([`Delivery::Dropped`], including when this
    /// very push drops it). Reports use `try_send`, so give `feedback` room for one message;
    /// a full or disconnected feedback channel loses the report, never blocks.
    ///
    /// # Errors
    ///
    /// [`SendError`] holding `(key, msg)` if the [`Receiver`] has been dropped; nothing is
    /// reported on `feedback` then.
    pub fn push_with_feedback(
        &self,
        key: K,
        msg: T,
        feedback: crossbeam_channel::Sender<Delivery>,
    ) -> Result<Pushed<T>, SendError<(K, T)>> {
        self.push_entry(
            key,
            Entry {
                msg,
                feedback: Some(feedback),
            },
        )
    }

    fn push_entry(&self, key: K, entry: Entry<T>) -> Result<Pushed<T>, SendError<(K, T)>> {
        let mut state = self.shared.state.lock();
        if !state.receiver_alive {
            drop(state);
            return Err(SendError((key, entry.msg)));
        }
        let was_empty = state.queue.is_empty();
        let outcome = state.queue.push(key, entry);
        drop(state);
        // Feedback and wake-ups happen after unlocking, so the receiver is never kept waiting
        // on them.
        Ok(match outcome {
            PushOutcome::Queued => {
                self.shared.available.notify_one();
                if was_empty {
                    // See `Receiver::ready` for why ringing on empty -> non-empty suffices.
                    let _ = self.doorbell.try_send(());
                }
                Pushed::Queued
            }
            // The length is unchanged and non-zero: no receiver can be waiting.
            PushOutcome::DroppedNew(entry) => Pushed::DroppedNew(entry.settle(Delivery::Dropped)),
            PushOutcome::EvictedOldest(old) => Pushed::EvictedOldest(old.settle(Delivery::Dropped)),
        })
    }
}

impl<K, T> Clone for Sender<K, T> {
    fn clone(&self) -> Self {
        self.shared.state.lock().senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
            doorbell: self.doorbell.clone(),
        }
    }
}

impl<K, T> Drop for Sender<K, T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.shared.available.notify_all();
        }
        // `self.doorbell` is dropped after this body, hence after the count reached zero: a
        // `select!` woken by the doorbell's disconnection always sees `senders == 0`.
    }
}

impl<K, T> fmt::Debug for Sender<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_handle("Sender", &self.shared, f)
    }
}

/// The receiving half of a keyed channel. Dropping it makes every later push fail and drops
/// the pending messages (reporting [`Delivery::Dropped`] to those pushed with feedback).
///
/// The doorbell protocol of [`ready`](Self::ready) assumes one thread at a time waits on it.
pub struct Receiver<K, T> {
    shared: Arc<Shared<K, T>>,
    doorbell: crossbeam_channel::Receiver<()>,
}

impl<K: Eq + Hash + Clone, T> Receiver<K, T> {
    /// Takes the next message without blocking.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing is queued but a sender remains;
    /// [`TryRecvError::Disconnected`] if nothing is queued and every sender is gone.
    pub fn try_recv(&self) -> Result<(K, T), TryRecvError> {
        let mut state = self.shared.state.lock();
        match state.queue.pop() {
            Some((key, entry)) => {
                drop(state);
                Ok((key, entry.settle(Delivery::Dequeued)))
            }
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Takes the next message, blocking until one is queued or every sender is gone.
    ///
    /// # Errors
    ///
    /// [`RecvError`] once the queue is drained and every sender is gone.
    pub fn recv(&self) -> Result<(K, T), RecvError> {
        match self.recv_until(None) {
            Ok(received) => Ok(received),
            // Without a deadline the only way out is disconnection.
            Err(RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout) => Err(RecvError),
        }
    }

    /// Takes the next message, blocking for at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing arrived in time;
    /// [`RecvTimeoutError::Disconnected`] once the queue is drained and every sender is gone.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<(K, T), RecvTimeoutError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_until(Some(deadline)),
            // A timeout beyond what `Instant` can represent is a wait without deadline.
            None => self.recv_until(None),
        }
    }

    /// Takes the next message, blocking until `deadline` at the latest.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing arrived before `deadline`;
    /// [`RecvTimeoutError::Disconnected`] once the queue is drained and every sender is gone.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<(K, T), RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<(K, T), RecvTimeoutError> {
        let mut state = self.shared.state.lock();
        let mut timed_out = false;
        loop {
            if let Some((key, entry)) = state.queue.pop() {
                drop(state);
                return Ok((key, entry.settle(Delivery::Dequeued)));
            }
            if state.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            // Checked only after one more look at the queue, so a message pushed just as the
            // wait timed out is still taken.
            if timed_out {
                return Err(RecvTimeoutError::Timeout);
            }
            match deadline {
                Some(deadline) => {
                    timed_out = self
                        .shared
                        .available
                        .wait_until(&mut state, deadline)
                        .timed_out();
                }
                None => self.shared.available.wait(&mut state),
            }
        }
    }

    /// A doorbell for waiting on this queue inside crossbeam's `select!` beside other channels.
    ///
    /// Protocol: when the doorbell fires, call [`try_recv`](Self::try_recv) until it returns
    /// [`TryRecvError::Empty`] (go back to the `select!`) or [`TryRecvError::Disconnected`] (stop
    /// selecting on the doorbell: once every sender is gone it stays ready forever). A wake-up
    /// may find nothing to do; that is harmless.
    ///
    /// The doorbell is a `bounded(1)` channel of `()`. A push that makes the queue go from empty
    /// to non-empty rings it with `try_send`, after releasing the lock; the single slot means at
    /// most one token ever waits. Every sender handle owns a clone of the doorbell's sender, and
    /// the last handle drops it only after recording that it was the last, so disconnection
    /// also wakes the `select!`.
    ///
    /// Why no wake-up is lost: let `E` be the moment, under the lock, at which the consumer's
    /// last `try_recv` returned `Empty` before it went back to `select!`. Everything queued
    /// before `E` was taken by the drain loop, since the queue was empty at `E`. Take the first
    /// message queued after `E`: while the consumer waits in `select!` nothing pops, so that
    /// push finds the queue empty and rings after unlocking, which is after `E`. Ringing either
    /// stores a token or finds one already stored, and only the consumer removes tokens, so a
    /// token is waiting and the `select!` returns. Later pushes find the queue non-empty and do
    /// not ring, and need not: the consumer is already due to wake, and its drain loop runs
    /// until the queue is empty again, which starts the argument over.
    ///
    /// The argument assumes a single consuming thread; with several threads draining through
    /// the same doorbell one could sleep while another leaves messages behind.
    ///
    /// ```
    /// use std::time::Duration;
    /// use crossbeam_channel::{after, select, unbounded};
    /// use syncpeer::keyed::{self, QueueStyle, TryRecvError};
    ///
    /// let (tx, rx) = keyed::channel::<u8, u32>(QueueStyle::Fifo, 64)?;
    /// let (control_tx, control_rx) = unbounded::<&str>();
    /// let producer = std::thread::spawn(move || {
    ///     for i in 0..20 {
    ///         tx.push((i % 3) as u8, i).unwrap();
    ///     }
    ///     control_tx.send("producer done").unwrap();
    ///     // `tx` is dropped here: the doorbell disconnects and wakes the select.
    /// });
    ///
    /// let timeout = after(Duration::from_secs(10));
    /// let mut received = 0;
    /// let mut control = Vec::new();
    /// 'outer: loop {
    ///     select! {
    ///         recv(rx.ready()) -> _ => loop {
    ///             match rx.try_recv() {
    ///                 Ok((_key, _msg)) => received += 1,
    ///                 Err(TryRecvError::Empty) => break,
    ///                 Err(TryRecvError::Disconnected) => break 'outer,
    ///             }
    ///         },
    ///         recv(control_rx) -> msg => {
    ///             if let Ok(msg) = msg {
    ///                 control.push(msg);
    ///             }
    ///         }
    ///         recv(timeout) -> _ => panic!("lost wake-up"),
    ///     }
    /// }
    /// producer.join().unwrap();
    /// assert_eq!(received, 20);
    /// # assert!(control.len() <= 1);
    /// # Ok::<(), keyed::InvalidCapacity>(())
    /// ```
    pub fn ready(&self) -> &crossbeam_channel::Receiver<()> {
        &self.doorbell
    }

    /// Drops every pending message, reporting [`Delivery::Dropped`] to those pushed with
    /// feedback, and returns how many were dropped. Senders are unaffected.
    pub fn clear(&self) -> usize {
        let pending = self.shared.state.lock().queue.take_all();
        // Feedback is sent and messages are dropped outside the lock.
        let mut dropped = 0;
        for entry in pending {
            entry.settle(Delivery::Dropped);
            dropped += 1;
        }
        dropped
    }
}

impl<K, T> Receiver<K, T> {
    /// Number of pending messages over all keys.
    pub fn len(&self) -> usize {
        self.shared.state.lock().queue.len()
    }

    /// Whether no message is pending.
    pub fn is_empty(&self) -> bool {
        self.shared.state.lock().queue.is_empty()
    }

    /// Number of keys currently holding a sub-queue (all of them with pending messages).
    /// Exposed for tests of the garbage collection of empty sub-queues.
    #[doc(hidden)]
    pub fn key_count(&self) -> usize {
        self.shared.state.lock().queue.key_count()
    }
}

impl<K, T> Drop for Receiver<K, T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.receiver_alive = false;
        let pending = state.queue.take_all();
        drop(state);
        pending.for_each(|entry| drop(entry.settle(Delivery::Dropped)));
    }
}

impl<K, T> fmt::Debug for Receiver<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_handle("Receiver", &self.shared, f)
    }
}

/// Shared `Debug` body of both handles; needs neither `K: Debug` nor `T: Debug`.
fn debug_handle<K, T>(
    name: &str,
    shared: &Shared<K, T>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let state = shared.state.lock();
    f.debug_struct(name)
        .field("style", &state.queue.style())
        .field("capacity_per_key", &state.queue.capacity_per_key())
        .field("len", &state.queue.len())
        .field("keys", &state.queue.key_count())
        .field("senders", &state.senders)
        .field("receiver_alive", &state.receiver_alive)
        .finish()
}
