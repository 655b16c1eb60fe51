//! The per-key queue itself: one bounded sub-queue per key, the overflow policy, and the
//! round-robin rotation over keys with pending messages. Plain data, no locking, no waking and
//! no feedback sending: `mod.rs` wraps it in a mutex and does all signalling after unlocking.
//!
//! Invariant: a key is in `rotation` exactly once if and only if it has a non-empty sub-queue in
//! `queues`. Sub-queues are removed the moment they become empty, so the map never holds more
//! keys than there are pending messages, however many distinct keys pass through.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crossbeam_channel::Sender;

use super::{Delivery, QueueStyle};

/// Below this many map slots the map is never shrunk: reallocating a small table costs more than
/// the memory it returns.
const MIN_SHRINK_CAPACITY: usize = 1024;

/// One queued message and where to report its fate.
pub(super) struct Entry<T> {
    pub(super) msg: T,
    pub(super) feedback: Option<Sender<Delivery>>,
}

impl<T> Entry<T> {
    /// Reports `delivery` on the feedback channel, if any, and hands the message back.
    ///
    /// Uses `try_send` so that a full or abandoned feedback channel never blocks the caller.
    pub(super) fn settle(self, delivery: Delivery) -> T {
        if let Some(feedback) = self.feedback {
            let _ = feedback.try_send(delivery);
        }
        self.msg
    }
}

/// What a push did to the queue.
pub(super) enum PushOutcome<T> {
    /// The new entry was appended; nothing was dropped.
    Queued,
    /// The key's sub-queue was full (FIFO): the new entry was not queued.
    DroppedNew(Entry<T>),
    /// The key's sub-queue was full (LIFO, KLAST): the oldest entry was evicted, the new one
    /// appended.
    EvictedOldest(Entry<T>),
}

/// Bounded sub-queues per key with round-robin fairness between keys.
pub(super) struct PerKeyQueue<K, T> {
    style: QueueStyle,
    capacity_per_key: usize,
    queues: HashMap<K, VecDeque<Entry<T>>>,
    /// Keys with pending messages, in the order they will be served.
    rotation: VecDeque<K>,
    /// Total number of queued messages over all keys.
    len: usize,
}

// No bounds: these are also used from `Drop` and `Debug`, which cannot require them.
impl<K, T> PerKeyQueue<K, T> {
    pub(super) fn style(&self) -> QueueStyle {
        self.style
    }

    pub(super) fn capacity_per_key(&self) -> usize {
        self.capacity_per_key
    }

    /// Number of queued messages over all keys.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of keys that currently own a sub-queue.
    pub(super) fn key_count(&self) -> usize {
        self.queues.len()
    }

    /// Removes every queued entry, leaving the queue empty with its memory released. The
    /// entries come back as an owning iterator so the caller can settle and drop them outside
    /// its lock.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = Entry<T>> + use<K, T> {
        self.rotation = VecDeque::new();
        self.len = 0;
        std::mem::take(&mut self.queues).into_values().flatten()
    }
}

impl<K: Eq + Hash + Clone, T> PerKeyQueue<K, T> {
    /// An empty queue. `capacity_per_key` must be at least 1 (checked by the caller).
    pub(super) fn new(style: QueueStyle, capacity_per_key: usize) -> Self {
        debug_assert!(capacity_per_key > 0);
        Self {
            style,
            capacity_per_key,
            queues: HashMap::new(),
            rotation: VecDeque::new(),
            len: 0,
        }
    }

    /// Queues `entry` under `key`, applying the overflow policy if the key's sub-queue is full.
    pub(super) fn push(&mut self, key: K, entry: Entry<T>) -> PushOutcome<T> {
        use std::collections::hash_map::Entry as Slot;
        let queue = match self.queues.entry(key) {
            Slot::Occupied(slot) => slot.into_mut(),
            Slot::Vacant(slot) => {
                self.rotation.push_back(slot.key().clone());
                slot.insert(VecDeque::new())
            }
        };
        if queue.len() < self.capacity_per_key {
            queue.push_back(entry);
            self.len += 1;
            return PushOutcome::Queued;
        }
        match self.style {
            QueueStyle::Fifo => PushOutcome::DroppedNew(entry),
            QueueStyle::Lifo | QueueStyle::Klast => {
                // Oldest is at the front for every style; only the pop end differs.
                let evicted = queue
                    .pop_front()
                    .expect("a full sub-queue holds at least one entry (capacity >= 1)");
                queue.push_back(entry);
                PushOutcome::EvictedOldest(evicted)
            }
        }
    }

    /// Takes the next message: from the key at the head of the rotation, which then moves to the
    /// back if it still has messages, or loses its sub-queue if not.
    pub(super) fn pop(&mut self) -> Option<(K, Entry<T>)> {
        let key = self.rotation.pop_front()?;
        let queue = self
            .queues
            .get_mut(&key)
            .expect("every key in the rotation owns a non-empty sub-queue");
        let entry = match self.style {
            QueueStyle::Fifo | QueueStyle::Klast => queue.pop_front(),
            QueueStyle::Lifo => queue.pop_back(),
        }
        .expect("every key in the rotation owns a non-empty sub-queue");
        self.len -= 1;
        if queue.is_empty() {
            self.queues.remove(&key);
            self.shrink_if_sparse();
        } else {
            self.rotation.push_back(key.clone());
        }
        Some((key, entry))
    }

    /// Gives back map memory after a burst of many keys. Shrinking only when the table is eight
    /// times larger than needed, and to twice the need, keeps the cost amortised O(1) per pop.
    fn shrink_if_sparse(&mut self) {
        let capacity = self.queues.capacity();
        if capacity >= MIN_SHRINK_CAPACITY && self.queues.len() * 8 < capacity {
            self.queues.shrink_to(self.queues.len() * 2);
            self.rotation.shrink_to(self.queues.len() * 2);
        }
    }

    #[cfg(test)]
    fn map_capacity(&self) -> usize {
        self.queues.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(msg: u32) -> Entry<u32> {
        Entry {
            msg,
            feedback: None,
        }
    }

    fn drain(q: &mut PerKeyQueue<char, u32>) -> Vec<(char, u32)> {
        std::iter::from_fn(|| q.pop().map(|(k, e)| (k, e.msg))).collect()
    }

    #[test]
    fn invariant_holds_through_pushes_and_pops() {
        let mut q = PerKeyQueue::new(QueueStyle::Klast, 2);
        for (k, m) in [('a', 1), ('b', 2), ('a', 3), ('a', 4), ('c', 5)] {
            q.push(k, entry(m));
        }
        assert_eq!(q.len(), 4);
        assert_eq!(q.key_count(), 3);
        assert_eq!(q.rotation.len(), 3);
        assert_eq!(drain(&mut q), [('a', 3), ('b', 2), ('c', 5), ('a', 4)]);
        assert!(q.is_empty());
        assert_eq!(q.key_count(), 0);
        assert!(q.rotation.is_empty());
    }

    #[test]
    fn fifo_overflow_leaves_queue_untouched() {
        let mut q = PerKeyQueue::new(QueueStyle::Fifo, 1);
        assert!(matches!(q.push('a', entry(1)), PushOutcome::Queued));
        assert!(matches!(q.push('a', entry(2)), PushOutcome::DroppedNew(e) if e.msg == 2));
        assert_eq!(q.len(), 1);
        assert_eq!(drain(&mut q), [('a', 1)]);
    }

    #[test]
    fn take_all_empties_everything() {
        let mut q = PerKeyQueue::new(QueueStyle::Lifo, 4);
        for m in 0..10 {
            q.push(char::from(b'a' + (m % 3) as u8), entry(m));
        }
        let mut taken: Vec<u32> = q.take_all().map(|e| e.msg).collect();
        taken.sort_unstable();
        assert_eq!(taken, (0..10).collect::<Vec<_>>());
        assert!(q.is_empty());
        assert_eq!(q.key_count(), 0);
        assert!(q.pop().is_none());
    }

    #[test]
    fn map_shrinks_after_a_burst_of_keys() {
        let mut q = PerKeyQueue::new(QueueStyle::Fifo, 1);
        for k in 0..10_000u32 {
            q.push(
                k,
                Entry {
                    msg: (),
                    feedback: None,
                },
            );
        }
        let peak = q.map_capacity();
        assert!(peak >= 10_000);
        while q.pop().is_some() {}
        assert_eq!(q.key_count(), 0);
        assert!(
            q.map_capacity() < MIN_SHRINK_CAPACITY,
            "capacity {} after draining from {peak}",
            q.map_capacity()
        );
    }
}
