//! Throughput of `syncpeer::keyed` against a plain crossbeam bounded channel: one thread
//! pushing `N` messages then popping them (on one key and spread over 100 keys), and a producer
//! thread feeding a consumer thread (blocking `recv`, and the `select!` doorbell protocol).
//! Capacities are large enough that nothing is ever dropped or blocked on space, so the figures
//! compare queueing cost only. Run with `cargo bench --bench keyed`.

use std::hint::black_box;
use std::thread;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput};
use crossbeam_channel::select;
use syncpeer::keyed::{self, QueueStyle, TryRecvError};

/// Messages per iteration.
const N: u64 = 10_000;

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(N))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group
}

fn push_then_pop(c: &mut Criterion) {
    let mut group = configure(c, "push_then_pop");
    group.bench_function("crossbeam_bounded", |b| {
        let (tx, rx) = crossbeam_channel::bounded(N as usize);
        b.iter(|| {
            for i in 0..N {
                tx.try_send(i).unwrap();
            }
            for _ in 0..N {
                black_box(rx.try_recv().unwrap());
            }
        });
    });
    for keys in [1, 100] {
        group.bench_function(format!("keyed_{keys}_keys"), |b| {
            let (tx, rx) = keyed::channel(QueueStyle::Fifo, N as usize).unwrap();
            b.iter(|| {
                for i in 0..N {
                    tx.push(i % keys, i).unwrap();
                }
                for _ in 0..N {
                    black_box(rx.try_recv().unwrap());
                }
            });
        });
    }
    group.finish();
}

fn producer_consumer(c: &mut Criterion) {
    let mut group = configure(c, "producer_consumer");
    group.bench_function("crossbeam_bounded", |b| {
        let (tx, rx) = crossbeam_channel::bounded(N as usize);
        b.iter(|| {
            thread::scope(|s| {
                s.spawn(|| (0..N).for_each(|i| tx.send(i).unwrap()));
                for _ in 0..N {
                    black_box(rx.recv().unwrap());
                }
            });
        });
    });
    group.bench_function("keyed_recv", |b| {
        let (tx, rx) = keyed::channel(QueueStyle::Fifo, N as usize).unwrap();
        b.iter(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..N {
                        tx.push(i % 4, i).unwrap();
                    }
                });
                for _ in 0..N {
                    black_box(rx.recv().unwrap());
                }
            });
        });
    });
    group.bench_function("keyed_select", |b| {
        let (tx, rx) = keyed::channel(QueueStyle::Fifo, N as usize).unwrap();
        let (_other_tx, other_rx) = crossbeam_channel::bounded::<()>(1);
        b.iter(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..N {
                        tx.push(i % 4, i).unwrap();
                    }
                });
                let mut received = 0;
                while received < N {
                    select! {
                        recv(rx.ready()) -> _ => loop {
                            match rx.try_recv() {
                                Ok(item) => {
                                    black_box(item);
                                    received += 1;
                                }
                                Err(TryRecvError::Empty) => break,
                                Err(TryRecvError::Disconnected) => unreachable!(),
                            }
                        },
                        recv(other_rx) -> _ => unreachable!(),
                    }
                }
            });
        });
    });
    group.finish();
}

// Written out instead of `criterion_group!`/`criterion_main!`, whose generated `pub fn` trips
// the crate's `missing_docs` lint.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    push_then_pop(&mut c);
    producer_consumer(&mut c);
    c.final_summary();
}
