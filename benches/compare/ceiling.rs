//! The design ceiling: syncpeer's thread and channel shape with nothing inside it, so that
//! what the shape itself costs is on the table next to what the library adds.
//!
//! Per end, three threads joined by crossbeam channels, the hops of syncpeer's app → outbox →
//! mux → frames → writer → socket and socket → reader → app:
//!
//! - a **reader** doing blocking reads of the socket and handing the raw bytes to the
//!   application over a channel;
//! - a **mux** forwarding what the application queued in its outbox channel to the frames
//!   channel;
//! - a **writer** writing what the frames channel brings.
//!
//! No codec, no session, no framing (the application counts bytes), and no polling besides
//! crossbeam's own brief back-off before a receiver parks.
//! Only the echo round trip is measured (an RPC would need the session). The server's
//! application is a thread that sends back whatever it receives, as the syncpeer side's echo.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};
use hdrhistogram::Histogram;
use syncpeer::Bytes;

use crate::common::{Trips, histogram, payload, record, tcp_pair};

/// Capacity of each channel (syncpeer's default `outbox_capacity`).
const CAPACITY: usize = 1024;
/// Bytes read per system call (as syncpeer's reader).
const READ_CHUNK: usize = 64 * 1024;

/// One end: the application's outbox and inbound channel, and the three threads.
struct End {
    outbox: Sender<Bytes>,
    inbound: Receiver<Bytes>,
    threads: Vec<JoinHandle<()>>,
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    let name = format!("ceiling-{name}");
    thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("spawn a thread")
}

fn end(socket: TcpStream) -> End {
    let (outbox, outbox_rx) = bounded::<Bytes>(CAPACITY);
    let (frames, frames_rx) = bounded::<Bytes>(CAPACITY);
    let (inbound_tx, inbound) = bounded::<Bytes>(CAPACITY);
    let mut read_half = socket.try_clone().expect("clone the socket");
    let mut write_half = socket;
    let reader = spawn("reader", move || {
        let mut buf = vec![0u8; READ_CHUNK];
        while let Ok(n @ 1..) = read_half.read(&mut buf) {
            if inbound_tx.send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                break;
            }
        }
    });
    let mux = spawn("mux", move || {
        for m in outbox_rx {
            if frames.send(m).is_err() {
                break;
            }
        }
    });
    let writer = spawn("writer", move || {
        for m in frames_rx {
            if write_half.write_all(&m).is_err() {
                break;
            }
        }
        let _ = write_half.shutdown(Shutdown::Write);
    });
    End {
        outbox,
        inbound,
        threads: vec![reader, mux, writer],
    }
}

/// Closed-loop echo round trips of `size` bytes; the first `warmup` are not recorded.
pub(crate) fn latency(size: usize, trips: Trips) -> Histogram<u64> {
    let (a, b) = tcp_pair();
    let client = end(a);
    let server = end(b);
    let echo = spawn("echo", move || {
        for chunk in server.inbound {
            if server.outbox.send(chunk).is_err() {
                break;
            }
        }
        // Dropping the outbox ends the mux, then the writer (which half-closes).
        drop(server.outbox);
        server
            .threads
            .into_iter()
            .for_each(|t| t.join().expect("server thread"));
    });
    let data = payload(size);
    let mut h = histogram();
    let started = Instant::now();
    for i in (0..).take_while(|&i| trips.go_on(i, started)) {
        let start = Instant::now();
        client.outbox.send(data.clone()).expect("client outbox");
        let mut got = 0;
        while got < size {
            got += client.inbound.recv().expect("echo").len();
        }
        if trips.records(i) {
            record(&mut h, start);
        }
    }
    // Closing the client's outbox half-closes its socket; the server sees EOF, stops and
    // half-closes its own, which ends the client's reader.
    drop(client.outbox);
    drop(client.inbound);
    client
        .threads
        .into_iter()
        .for_each(|t| t.join().expect("client thread"));
    echo.join().expect("echo thread");
    h
}
