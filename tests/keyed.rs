//! Behaviour of `syncpeer::keyed` through its public API: overflow policies and pop order,
//! round-robin fairness, feedback, disconnection and drain-before-end, the `select!` doorbell
//! under concurrent senders, garbage collection of transient keys, and a model-based check
//! against a naive reference queue. Every blocking wait is bounded.

use std::collections::{HashMap, VecDeque};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver as CbReceiver, at, bounded, select, unbounded};
use proptest::prelude::*;
use syncpeer::keyed::{
    self, Delivery, InvalidCapacity, Pushed, QueueStyle, Receiver, RecvError, RecvTimeoutError,
    SendError, Sender, TryRecvError,
};

/// Bound on any wait that should end promptly; reaching it means a hang.
const HANG: Duration = Duration::from_secs(10);
/// Stress sizing: producers × messages each, for the lost wake-up test.
const PRODUCERS: u32 = 4;
const PER_PRODUCER: u32 = 50_000;

const STYLES: [QueueStyle; 3] = [QueueStyle::Fifo, QueueStyle::Lifo, QueueStyle::Klast];

fn chan<K: Eq + std::hash::Hash + Clone, T>(
    style: QueueStyle,
    capacity: usize,
) -> (Sender<K, T>, Receiver<K, T>) {
    keyed::channel(style, capacity).expect("capacity is non-zero")
}

/// Everything currently queued, in delivery order, without blocking.
fn drain<K: Eq + std::hash::Hash + Clone, T>(rx: &Receiver<K, T>) -> Vec<(K, T)> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn values<K, T>(pairs: Vec<(K, T)>) -> Vec<T> {
    pairs.into_iter().map(|(_, v)| v).collect()
}

/// Every report a feedback channel received so far.
fn reports(feedback: &CbReceiver<Delivery>) -> Vec<Delivery> {
    feedback.try_iter().collect()
}

#[test]
fn zero_capacity_is_refused() {
    let err = keyed::channel::<u8, u8>(QueueStyle::Fifo, 0).unwrap_err();
    assert_eq!(err, InvalidCapacity);
    assert_eq!(err.to_string(), "capacity per key must be at least 1");
}

#[test]
fn fifo_full_drops_the_new_message() {
    let (tx, rx) = chan(QueueStyle::Fifo, 3);
    let pushed: Vec<_> = (1..=4).map(|m| tx.push('a', m).unwrap()).collect();
    assert_eq!(
        pushed,
        [
            Pushed::Queued,
            Pushed::Queued,
            Pushed::Queued,
            Pushed::DroppedNew(4)
        ]
    );
    assert_eq!(rx.len(), 3);
    assert_eq!(values(drain(&rx)), [1, 2, 3]);
}

#[test]
fn lifo_full_evicts_the_oldest_and_pops_newest_first() {
    let (tx, rx) = chan(QueueStyle::Lifo, 3);
    let pushed: Vec<_> = (1..=4).map(|m| tx.push('a', m).unwrap()).collect();
    assert_eq!(pushed[3], Pushed::EvictedOldest(1));
    assert_eq!(values(drain(&rx)), [4, 3, 2]);

    for m in 1..=3 {
        assert_eq!(tx.push('a', m).unwrap(), Pushed::Queued);
    }
    assert_eq!(values(drain(&rx)), [3, 2, 1]);
}

#[test]
fn klast_full_evicts_the_oldest_and_pops_oldest_first() {
    let (tx, rx) = chan(QueueStyle::Klast, 3);
    let pushed: Vec<_> = (1..=4).map(|m| tx.push('a', m).unwrap()).collect();
    assert_eq!(pushed[3], Pushed::EvictedOldest(1));
    assert_eq!(pushed[3].into_dropped(), Some(1));
    assert_eq!(values(drain(&rx)), [2, 3, 4]);
}

#[test]
fn keys_are_served_round_robin() {
    for style in STYLES {
        let (tx, rx) = chan(style, 3);
        for (key, msg) in [
            ('A', "a1"),
            ('B', "b1"),
            ('A', "a2"),
            ('C', "c1"),
            ('B', "b2"),
            ('A', "a3"),
        ] {
            assert_eq!(tx.push(key, msg).unwrap(), Pushed::Queued);
        }
        let expected = match style {
            QueueStyle::Fifo | QueueStyle::Klast => ["a1", "b1", "c1", "a2", "b2", "a3"],
            QueueStyle::Lifo => ["a3", "b2", "c1", "a2", "b1", "a1"],
        };
        let got = drain(&rx);
        assert_eq!(values(got.clone()), expected, "{style:?}");
        let keys: String = got.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, "ABCABA", "{style:?}");
    }
}

#[test]
fn a_key_that_empties_rejoins_at_the_back() {
    let (tx, rx) = chan(QueueStyle::Fifo, 4);
    tx.push('A', 1).unwrap();
    tx.push('B', 2).unwrap();
    assert_eq!(rx.try_recv(), Ok(('A', 1)));
    tx.push('A', 3).unwrap();
    tx.push('B', 4).unwrap();
    assert_eq!(drain(&rx), [('B', 2), ('A', 3), ('B', 4)]);
}

#[test]
fn feedback_reports_dequeue_exactly_once() {
    let (tx, rx) = chan(QueueStyle::Fifo, 2);
    let (fb, fb_rx) = bounded(1);
    tx.push_with_feedback('a', 1, fb).unwrap();
    assert!(reports(&fb_rx).is_empty(), "nothing reported while queued");
    assert_eq!(rx.try_recv(), Ok(('a', 1)));
    assert_eq!(reports(&fb_rx), [Delivery::Dequeued]);
    // The feedback sender went with the message: no second report can come.
    assert!(fb_rx.is_empty() && fb_rx.try_recv().is_err());
}

#[test]
fn feedback_reports_a_refused_new_message() {
    let (tx, rx) = chan(QueueStyle::Fifo, 1);
    let (fb_old, fb_old_rx) = bounded(1);
    let (fb_new, fb_new_rx) = bounded(1);
    tx.push_with_feedback('a', 1, fb_old).unwrap();
    assert_eq!(
        tx.push_with_feedback('a', 2, fb_new).unwrap(),
        Pushed::DroppedNew(2)
    );
    assert_eq!(reports(&fb_new_rx), [Delivery::Dropped]);
    assert!(reports(&fb_old_rx).is_empty());
    assert_eq!(drain(&rx), [('a', 1)]);
    assert_eq!(reports(&fb_old_rx), [Delivery::Dequeued]);
}

#[test]
fn feedback_reports_an_evicted_message() {
    for style in [QueueStyle::Lifo, QueueStyle::Klast] {
        let (tx, rx) = chan(style, 1);
        let (fb_old, fb_old_rx) = bounded(1);
        let (fb_new, fb_new_rx) = bounded(1);
        tx.push_with_feedback('a', 1, fb_old).unwrap();
        assert_eq!(
            tx.push_with_feedback('a', 2, fb_new).unwrap(),
            Pushed::EvictedOldest(1)
        );
        assert_eq!(reports(&fb_old_rx), [Delivery::Dropped], "{style:?}");
        assert!(reports(&fb_new_rx).is_empty(), "{style:?}");
        assert_eq!(drain(&rx), [('a', 2)]);
        assert_eq!(reports(&fb_new_rx), [Delivery::Dequeued], "{style:?}");
    }
}

#[test]
fn clear_drops_everything_with_feedback() {
    let (tx, rx) = chan(QueueStyle::Klast, 4);
    let (fb, fb_rx) = unbounded();
    for m in 0..6 {
        tx.push_with_feedback(m % 3, m, fb.clone()).unwrap();
    }
    tx.push(7, 7).unwrap();
    assert_eq!(rx.clear(), 7);
    assert_eq!(reports(&fb_rx), [Delivery::Dropped; 6]);
    assert!(rx.is_empty());
    assert_eq!(rx.key_count(), 0);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    // The channel still works after a clear, and the senders are untouched.
    tx.push(1, 10).unwrap();
    assert_eq!(drain(&rx), [(1, 10)]);
}

#[test]
fn dropping_the_receiver_drops_pending_with_feedback_and_refuses_pushes() {
    let (tx, rx) = chan(QueueStyle::Fifo, 4);
    let (fb, fb_rx) = bounded(1);
    tx.push_with_feedback("k", 1, fb).unwrap();
    drop(rx);
    assert_eq!(reports(&fb_rx), [Delivery::Dropped]);
    let (fb, fb_rx) = bounded(1);
    let err = tx.push_with_feedback("k", 2, fb).unwrap_err();
    assert_eq!(err, SendError(("k", 2)));
    assert_eq!(err.into_inner(), ("k", 2));
    assert!(reports(&fb_rx).is_empty(), "a refused push reports nothing");
}

#[test]
fn the_receiver_drains_everything_before_reporting_disconnection() {
    let (tx, rx) = chan(QueueStyle::Fifo, 8);
    let tx2 = tx.clone();
    for m in 0..5 {
        tx.push(m % 2, m).unwrap();
        tx2.push(2, m + 100).unwrap();
    }
    drop(tx);
    drop(tx2);
    let mut received = Vec::new();
    loop {
        match rx.recv_timeout(HANG) {
            Ok(item) => received.push(item),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("disconnection never reported"),
        }
    }
    assert_eq!(received.len(), 10);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert_eq!(rx.recv(), Err(RecvError));
    assert_eq!(
        rx.recv_deadline(Instant::now() + HANG),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn one_remaining_clone_keeps_the_channel_open() {
    let (tx, rx) = chan::<u8, u8>(QueueStyle::Fifo, 1);
    let tx2 = tx.clone();
    drop(tx);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(10)),
        Err(RecvTimeoutError::Timeout)
    );
    tx2.push(1, 1).unwrap();
    // A deadline already past still takes what is queued.
    assert_eq!(rx.recv_deadline(Instant::now()), Ok((1, 1)));
}

#[test]
fn blocking_recv_wakes_on_push_and_on_last_sender_drop() {
    let (tx, rx) = chan(QueueStyle::Fifo, 1);
    let pusher = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        tx.push(0u8, 42u32).unwrap();
        thread::sleep(Duration::from_millis(20));
        // `tx` dropped here.
    });
    assert_eq!(rx.recv_timeout(HANG), Ok((0, 42)));
    let waited = Instant::now();
    assert_eq!(rx.recv_timeout(HANG), Err(RecvTimeoutError::Disconnected));
    assert!(waited.elapsed() < HANG);
    pusher.join().unwrap();
}

#[test]
fn the_doorbell_wakes_a_select_on_disconnection() {
    let (tx, rx) = chan::<u8, u8>(QueueStyle::Fifo, 1);
    let tx2 = tx.clone();
    let dropper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        drop(tx);
        thread::sleep(Duration::from_millis(20));
        drop(tx2);
    });
    let deadline = at(Instant::now() + HANG);
    select! {
        recv(rx.ready()) -> _ => assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected)),
        recv(deadline) -> _ => panic!("select never woke on disconnection"),
    }
    dropper.join().unwrap();
}

/// The consumer side of the stress tests: waits only through `select!` on the doorbell, a
/// second channel and a deadline, following the drain protocol of `Receiver::ready`. Items go
/// to `on_item`, notes from `other` to `on_note`; returns once the channel reports
/// disconnection. The note arm never touches the queue, so it cannot mask a lost wake-up.
fn consume_by_select<N>(
    rx: &Receiver<u32, u32>,
    other: &CbReceiver<N>,
    mut on_item: impl FnMut((u32, u32)),
    mut on_note: impl FnMut(N),
) {
    let deadline = at(Instant::now() + HANG);
    loop {
        select! {
            recv(rx.ready()) -> _ => loop {
                match rx.try_recv() {
                    Ok(item) => on_item(item),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            },
            recv(other) -> note => {
                if let Ok(note) = note {
                    on_note(note);
                }
            }
            recv(deadline) -> _ => panic!("consumer hung: a wake-up was lost"),
        }
    }
}

/// Producers push in rounds and wait for the consumer to take the whole round before the next,
/// so the queue goes idle `ROUNDS` times with every sender still alive: a lost wake-up at the
/// end of any round stalls the consumer until the deadline instead of being rescued by a later
/// push or by the final disconnection.
#[test]
fn no_wake_up_is_lost_under_concurrent_senders() {
    const ROUNDS: u32 = 1_000;
    const BURST: u32 = PER_PRODUCER / ROUNDS;
    let per_round = (PRODUCERS * BURST) as usize;
    let total = (PRODUCERS * PER_PRODUCER) as usize;
    let (tx, rx) = chan::<u32, u32>(QueueStyle::Fifo, PER_PRODUCER as usize);
    let (note_tx, note_rx) = unbounded::<u32>();
    let (ack_txs, producers): (Vec<_>, Vec<_>) = (0..PRODUCERS)
        .map(|p| {
            let (ack_tx, ack_rx) = bounded::<()>(1);
            let (tx, note_tx) = (tx.clone(), note_tx.clone());
            let producer = thread::spawn(move || {
                for round in 0..ROUNDS {
                    for i in 0..BURST {
                        assert_eq!(tx.push(p, round * BURST + i).unwrap(), Pushed::Queued);
                    }
                    note_tx.send(p).unwrap();
                    ack_rx.recv_timeout(HANG).expect("round never acknowledged");
                }
            });
            (ack_tx, producer)
        })
        .unzip();
    drop((tx, note_tx));

    let mut next = vec![0; PRODUCERS as usize];
    let mut received = 0;
    let mut notes = 0;
    consume_by_select(
        &rx,
        &note_rx,
        |(key, value)| {
            assert_eq!(value, next[key as usize], "key {key} out of order");
            next[key as usize] += 1;
            received += 1;
            if received % per_round == 0 {
                for ack in &ack_txs {
                    ack.send(()).unwrap();
                }
            }
        },
        |_| notes += 1,
    );
    for producer in producers {
        producer.join().unwrap();
    }
    assert_eq!(received, total);
    assert!(next.iter().all(|&n| n == PER_PRODUCER));
    assert_eq!(
        notes + note_rx.try_iter().count(),
        (PRODUCERS * ROUNDS) as usize
    );
}

#[test]
fn every_message_is_received_or_reported_lost_under_overflow() {
    const PER: u32 = 20_000;
    const KEYS_EACH: u32 = 3;
    for style in STYLES {
        let (tx, rx) = chan::<u32, u32>(style, 4);
        let (lost_tx, lost_rx) = unbounded::<u32>();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (tx, lost_tx) = (tx.clone(), lost_tx.clone());
                thread::spawn(move || {
                    let mut lost = 0;
                    for i in 0..PER {
                        let key = p * KEYS_EACH + i % KEYS_EACH;
                        lost += u32::from(tx.push(key, i).unwrap().into_dropped().is_some());
                    }
                    lost_tx.send(lost).unwrap();
                })
            })
            .collect();
        drop((tx, lost_tx));
        let (mut received, mut lost) = (0, 0);
        consume_by_select(&rx, &lost_rx, |_| received += 1, |n| lost += n);
        for producer in producers {
            producer.join().unwrap();
        }
        lost += lost_rx.try_iter().sum::<u32>();
        assert_eq!(received + lost, PRODUCERS * PER, "{style:?}");
    }
}

#[test]
fn transient_keys_do_not_accumulate() {
    let (tx, rx) = chan(QueueStyle::Fifo, 2);
    let mut most_keys = 0;
    for key in 0..100_000u64 {
        tx.push(key, key).unwrap();
        most_keys = most_keys.max(rx.key_count());
        if key >= 8 {
            assert!(rx.try_recv().is_ok());
        }
    }
    assert_eq!(most_keys, 9);
    assert_eq!(drain(&rx).len(), 8);
    assert_eq!(rx.key_count(), 0);
}

#[test]
fn debug_needs_neither_key_nor_message_debug() {
    struct Opaque;
    #[derive(Clone, PartialEq, Eq, Hash)]
    struct OpaqueKey;
    let (tx, rx) = chan::<OpaqueKey, Opaque>(QueueStyle::Lifo, 2);
    tx.push(OpaqueKey, Opaque).unwrap();
    let shown = format!("{tx:?} {rx:?}");
    assert!(shown.contains("len: 1"), "{shown}");
    assert!(shown.contains("Lifo"), "{shown}");
}

/// A deliberately naive reference: keys with pending messages kept in a list in serving order.
#[derive(Default)]
struct Model {
    queues: HashMap<u8, VecDeque<u32>>,
    order: Vec<u8>,
}

impl Model {
    fn push(&mut self, style: QueueStyle, capacity: usize, key: u8, msg: u32) -> Pushed<u32> {
        let queue = self.queues.entry(key).or_default();
        if queue.is_empty() {
            self.order.push(key);
        }
        if queue.len() < capacity {
            queue.push_back(msg);
            return Pushed::Queued;
        }
        if style == QueueStyle::Fifo {
            return Pushed::DroppedNew(msg);
        }
        let oldest = queue.pop_front().unwrap();
        queue.push_back(msg);
        Pushed::EvictedOldest(oldest)
    }

    fn pop(&mut self, style: QueueStyle) -> Option<(u8, u32)> {
        if self.order.is_empty() {
            return None;
        }
        let key = self.order.remove(0);
        let queue = self.queues.get_mut(&key).unwrap();
        let msg = match style {
            QueueStyle::Lifo => queue.pop_back(),
            _ => queue.pop_front(),
        }
        .unwrap();
        if !queue.is_empty() {
            self.order.push(key);
        }
        Some((key, msg))
    }

    fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(u8),
    Pop,
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..5).prop_map(Op::Push),
        4 => Just(Op::Pop),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #[test]
    fn matches_the_reference_model(
        style in prop::sample::select(STYLES.to_vec()),
        capacity in 1usize..4,
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let (tx, rx) = chan(style, capacity);
        let mut model = Model::default();
        for (n, op) in ops.into_iter().enumerate() {
            let msg = n as u32;
            match op {
                Op::Push(key) => prop_assert_eq!(
                    tx.push(key, msg).unwrap(),
                    model.push(style, capacity, key, msg)
                ),
                Op::Pop => prop_assert_eq!(rx.try_recv().ok(), model.pop(style)),
                Op::Clear => {
                    prop_assert_eq!(rx.clear(), model.len());
                    model = Model::default();
                }
            }
            prop_assert_eq!(rx.len(), model.len());
            prop_assert_eq!(rx.key_count(), model.order.len());
        }
    }
}
