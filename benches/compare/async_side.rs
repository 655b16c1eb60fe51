//! The workloads on the async baseline (`tests/support/async_peer.rs`): two peers over loopback
//! TCP on one multi-threaded tokio runtime, the application as tasks on the same runtime (how
//! the original is used). Every workload runs inside a spawned task, not in `block_on`, so no
//! step hops through the benchmark's main thread.

use std::future::Future;
use std::time::Instant;

use hdrhistogram::Histogram;
use syncpeer::Bytes;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::async_peer::{self, AsyncConfig, AsyncPeerHandle, Received, Variant};
use crate::common::{
    DIRECT, Kind, RPC, RPC_TIMEOUT, ShutdownRun, Trips, histogram, payload, record, tcp_pair,
};

/// The runtime: one worker per core, as tokio's default.
pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` as a task and waits for it.
fn run<T: Send + 'static>(rt: &Runtime, f: impl Future<Output = T> + Send + 'static) -> T {
    rt.block_on(rt.spawn(f)).expect("benchmark task")
}

struct Side {
    handle: AsyncPeerHandle,
    inbound: UnboundedReceiver<Received>,
}

fn side(socket: std::net::TcpStream, config: AsyncConfig) -> Side {
    let (tx, inbound) = tokio::sync::mpsc::unbounded_channel();
    let handlers = async_peer::handlers(vec![(DIRECT, tx.clone()), (RPC, tx)]);
    let handle = AsyncPeerHandle::spawn(&Handle::current(), socket, config, handlers)
        .expect("spawn async peer");
    Side { handle, inbound }
}

fn pair(config_a: AsyncConfig) -> (Side, Side) {
    let (a, b) = tcp_pair();
    (side(a, config_a), side(b, AsyncConfig::default()))
}

/// Echoes direct sends and answers requests until the peer closes; then closes its side.
fn echo(mut b: Side) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let reqs = b.handle.requests();
        while let Some(m) = b.inbound.recv().await {
            match m {
                Received::Message { data, .. } => {
                    if async_peer::send_on(&reqs, DIRECT, data).await.is_err() {
                        break;
                    }
                }
                Received::Request { data, replier, .. } => {
                    let _ = replier.send(data);
                }
            }
        }
        drop(reqs);
        b.handle.shutdown().await;
    })
}

/// Closed-loop round trips; the first `warmup` are not recorded.
pub(crate) fn latency(rt: &Runtime, kind: Kind, size: usize, trips: Trips) -> Histogram<u64> {
    run(rt, async move {
        let (mut a, b) = pair(AsyncConfig::default());
        let server = echo(b);
        let data = payload(size);
        let mut h = histogram();
        let started = Instant::now();
        for i in (0..).take_while(|&i| trips.go_on(i, started)) {
            let start = Instant::now();
            match kind {
                Kind::Direct => {
                    a.handle.send(DIRECT, data.clone()).await.expect("send");
                    a.inbound.recv().await.expect("echo");
                }
                Kind::Rpc => {
                    a.handle
                        .rpc(RPC, data.clone(), RPC_TIMEOUT)
                        .await
                        .expect("rpc");
                }
            }
            if trips.records(i) {
                record(&mut h, start);
            }
        }
        a.handle.shutdown().await;
        server.await.expect("echo task");
        h
    })
}

/// Counts `n` messages; returns when the last arrived.
fn count(mut inbound: UnboundedReceiver<Received>, n: usize) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        for _ in 0..n {
            inbound.recv().await.expect("message");
        }
        Instant::now()
    })
}

/// One-way direct sends of `n` messages of `size` bytes: seconds until the remote has all.
pub(crate) fn throughput(rt: &Runtime, size: usize, n: usize) -> f64 {
    run(rt, async move {
        let (a, b) = pair(AsyncConfig::default());
        let counter = count(b.inbound, n);
        let data = payload(size);
        let start = Instant::now();
        for _ in 0..n {
            a.handle.send(DIRECT, data.clone()).await.expect("send");
        }
        let done = counter.await.expect("counter task");
        a.handle.shutdown().await;
        b.handle.shutdown().await;
        (done - start).as_secs_f64()
    })
}

/// Queues `n` messages of `size` bytes (the request channel holds them all), then closes as
/// `variant` does.
pub(crate) fn shutdown(rt: &Runtime, variant: Variant, size: usize, n: usize) -> ShutdownRun {
    run(rt, async move {
        let config = AsyncConfig {
            variant,
            peer_reqs_capacity: n,
            ..AsyncConfig::default()
        };
        let (a, b) = pair(config);
        let mut inbound = b.inbound;
        let counter = tokio::spawn(async move {
            let mut received = 0u64;
            let mut last = Instant::now();
            // Closed once the remote's main loop has ended (on EOF).
            while inbound.recv().await.is_some() {
                received += 1;
                last = Instant::now();
            }
            (received, last)
        });
        let data: Bytes = payload(size);
        let start = Instant::now();
        for _ in 0..n {
            a.handle.send(DIRECT, data.clone()).await.expect("send");
        }
        let queued_at_close = a.handle.queued() as u64;
        let close = Instant::now();
        a.handle.shutdown().await;
        let closed = Instant::now();
        let (received, last) = counter.await.expect("counter task");
        b.handle.shutdown().await;
        ShutdownRun {
            accepted: n as u64,
            received,
            queued_at_close,
            close: closed - close,
            total: last.saturating_duration_since(start),
        }
    })
}
