//! A fault-injecting TCP relay for loopback tests.
//!
//! [`relay_pair`] builds `A ⇄ relay ⇄ B`: the relay accepts A on `127.0.0.1:0`, connects
//! onward to a listener of B's, and forwards bytes in both directions on two threads, one per
//! direction. A fault is injected per direction, at once, at a byte offset (exactly that many
//! bytes of the direction are forwarded first) or at the Nth read call:
//!
//! - [`Fault::Fail`]: closes both connections (`shutdown(Both)` on both sockets): both sides
//!   read EOF, possibly inside a frame; whatever the relay held is lost.
//! - [`Fault::Stall`]: stops forwarding the direction. The relay stops *reading* it, so the
//!   sender's socket buffers fill and its writes block (this is how `write_timeout` and a
//!   remote that never reads are exercised).
//! - [`Fault::ShortWrites`]: forwards the direction in pieces of at most `n` bytes, one write
//!   (and, with `TCP_NODELAY`, one segment) each.
//! - [`Fault::Reset`]: an emulated connection reset. Setting `SO_LINGER` to 0 needs
//!   `TcpStream::set_linger` (unstable) or `socket2`/`libc` (not dependencies), so the relay
//!   uses the other way Linux sends an RST: closing a socket whose receive queue holds unread
//!   bytes. It stops reading the direction's source, waits (at most [`RESET_WAIT`]) until that
//!   side has sent at least one byte the relay has not read, then closes every socket without
//!   `shutdown`. The source then gets `ECONNRESET` (or `EPIPE`); the other side gets an RST
//!   too if it also has unread bytes at the relay, else a plain FIN. If the source sends
//!   nothing within the wait, the fault degrades to a plain close (FIN), which
//!   [`Relay::reset_was_real`] reports.
//!
//! Every wait in the relay is bounded: sockets have 10 ms read and write timeouts, and the
//! threads check the relay's state between calls, so dropping a [`Relay`] always ends them.
#![allow(dead_code, unreachable_pub)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a [`Fault::Reset`] waits for unread bytes from its victim.
pub const RESET_WAIT: Duration = Duration::from_secs(2);

const TICK: Duration = Duration::from_millis(10);

/// A direction of the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From A (who connected to the relay) to B.
    AToB,
    /// From B to A.
    BToA,
}

/// What to do to a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Close both connections.
    Fail,
    /// Stop forwarding (and reading) this direction.
    Stall,
    /// Forward in pieces of at most this many bytes (at least 1).
    ShortWrites(usize),
    /// Emulated reset toward this direction's source (see the module docs).
    Reset,
}

/// When a fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Now (before the next read).
    Now,
    /// Once exactly this many bytes of the direction have been forwarded.
    AtByte(u64),
    /// Once the bytes of this many reads of the direction have been forwarded.
    AtCall(u64),
}

#[derive(Default)]
struct DirState {
    forwarded: AtomicU64,
    calls: AtomicU64,
    stalled: AtomicBool,
    /// 0: forward whole reads.
    piece: AtomicUsize,
    plan: Mutex<Option<(Trigger, Fault)>>,
    fired: AtomicBool,
}

#[derive(Default)]
struct State {
    dirs: [DirState; 2],
    /// Set on `Fail`, on an error, or on drop: the threads shut everything and exit.
    failed: AtomicBool,
    /// Set when a reset is due: the threads exit without `shutdown`, dropping their sockets.
    closing: AtomicBool,
    reset_real: AtomicBool,
}

impl State {
    fn dir(&self, d: Dir) -> &DirState {
        &self.dirs[d as usize]
    }

    fn stopping(&self) -> bool {
        self.failed.load(SeqCst) || self.closing.load(SeqCst)
    }
}

/// The relay between A and B. Dropping it closes both connections and joins its threads.
pub struct Relay {
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

/// A TCP connection through a relay: (A's socket, B's socket, the relay).
#[track_caller]
pub fn relay_pair() -> (TcpStream, TcpStream, Relay) {
    let target = TcpListener::bind("127.0.0.1:0").expect("bind B's listener");
    let front = TcpListener::bind("127.0.0.1:0").expect("bind the relay's listener");
    let a = TcpStream::connect(front.local_addr().unwrap()).expect("A connects to the relay");
    let (ra, _) = front.accept().expect("the relay accepts A");
    let rb = TcpStream::connect(target.local_addr().unwrap()).expect("the relay connects to B");
    let (b, _) = target.accept().expect("B accepts the relay");
    (a, b, Relay::start(ra, rb))
}

impl Relay {
    /// Forwards between the relay's socket facing A and the one facing B.
    pub fn start(a: TcpStream, b: TcpStream) -> Relay {
        for s in [&a, &b] {
            s.set_nodelay(true).expect("nodelay");
            s.set_read_timeout(Some(TICK)).expect("read timeout");
            s.set_write_timeout(Some(TICK)).expect("write timeout");
        }
        let state = Arc::new(State::default());
        let mut threads = Vec::new();
        // The threads own every descriptor, so a reset closes the sockets when they exit.
        let (a2, b2) = (
            a.try_clone().expect("clone relay socket"),
            b.try_clone().expect("clone relay socket"),
        );
        for (dir, src, dst) in [(Dir::AToB, a, b2), (Dir::BToA, b, a2)] {
            let fwd = Forwarder {
                dir,
                src,
                dst,
                state: state.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("relay-{dir:?}"))
                .spawn(move || fwd.run())
                .expect("spawn relay thread");
            threads.push(t);
        }
        Relay { state, threads }
    }

    /// Plans `fault` on `dir`, replacing any fault planned there and not yet fired.
    pub fn inject(&self, dir: Dir, trigger: Trigger, fault: Fault) {
        let d = self.state.dir(dir);
        d.fired.store(false, SeqCst);
        *d.plan.lock() = Some((trigger, fault));
    }

    /// Closes both connections at once.
    pub fn fail(&self) {
        self.inject(Dir::AToB, Trigger::Now, Fault::Fail);
    }

    /// Bytes forwarded so far in `dir`.
    pub fn forwarded(&self, dir: Dir) -> u64 {
        self.state.dir(dir).forwarded.load(SeqCst)
    }

    /// True once the fault planned on `dir` has fired.
    pub fn fired(&self, dir: Dir) -> bool {
        self.state.dir(dir).fired.load(SeqCst)
    }

    /// Waits (bounded) for the fault planned on `dir` to fire.
    pub fn wait_fired(&self, dir: Dir, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.fired(dir) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// True once the relay has closed its connections (fault, error or EOF both ways).
    pub fn is_closed(&self) -> bool {
        self.state.stopping()
    }

    /// True if a `Reset` found unread bytes, so the kernel sent a real RST.
    pub fn reset_was_real(&self) -> bool {
        self.state.reset_real.load(SeqCst)
    }

    /// Waits (bounded) for both forwarding threads to end; true if they did.
    pub fn wait_closed(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.threads.iter().any(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.state.closing.load(SeqCst) {
            self.state.failed.store(true, SeqCst);
        }
        // Each thread notices within one tick and shuts its sockets.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Forwarder {
    dir: Dir,
    src: TcpStream,
    dst: TcpStream,
    state: Arc<State>,
}

impl Forwarder {
    fn me(&self) -> &DirState {
        self.state.dir(self.dir)
    }

    fn run(self) {
        let mut buf = vec![0u8; 16 * 1024];
        // Bytes read but not yet forwarded: a read may overshoot a trigger planned while it
        // was waiting, so forwarding is cut at the trigger from here.
        let mut pending: Vec<u8> = Vec::new();
        loop {
            if self.state.failed.load(SeqCst) {
                let _ = self.src.shutdown(Shutdown::Both);
                let _ = self.dst.shutdown(Shutdown::Both);
                return;
            }
            if self.state.closing.load(SeqCst) {
                // A reset: just drop the sockets (no FIN first).
                return;
            }
            let limit = match self.due(pending.len()) {
                Due::Fire(fault) => {
                    self.fire(fault);
                    continue;
                }
                Due::Limit(n) => n,
            };
            if self.me().stalled.load(SeqCst) {
                std::thread::sleep(TICK);
                continue;
            }
            if pending.is_empty() {
                match (&self.src).read(&mut buf) {
                    Ok(0) => {
                        // Propagate the half-close and stop this direction.
                        let _ = self.dst.shutdown(Shutdown::Write);
                        return;
                    }
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        self.me().calls.fetch_add(1, SeqCst);
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => self.state.failed.store(true, SeqCst),
                }
                continue;
            }
            let n = pending.len().min(limit);
            if self.write_all(&pending[..n]) {
                pending.drain(..n);
                self.me().forwarded.fetch_add(n as u64, SeqCst);
            }
        }
    }

    /// Whether the planned fault is due now, else how many bytes may be forwarded before it
    /// is. `pending` bytes have been read and not forwarded.
    fn due(&self, pending: usize) -> Due {
        let me = self.me();
        let plan = *me.plan.lock();
        let Some((trigger, fault)) = plan else {
            return Due::Limit(usize::MAX);
        };
        let forwarded = me.forwarded.load(SeqCst);
        match trigger {
            Trigger::Now => Due::Fire(fault),
            Trigger::AtByte(n) if forwarded >= n => Due::Fire(fault),
            Trigger::AtByte(n) => Due::Limit((n - forwarded).try_into().unwrap_or(usize::MAX)),
            Trigger::AtCall(n) if pending == 0 && me.calls.load(SeqCst) >= n => Due::Fire(fault),
            Trigger::AtCall(_) => Due::Limit(usize::MAX),
        }
    }

    fn fire(&self, fault: Fault) {
        let me = self.me();
        *me.plan.lock() = None;
        match fault {
            Fault::Fail => {
                self.state.failed.store(true, SeqCst);
                // Before the sockets close, so whoever sees the close sees `fired`.
                me.fired.store(true, SeqCst);
                let _ = self.src.shutdown(Shutdown::Both);
                let _ = self.dst.shutdown(Shutdown::Both);
            }
            Fault::Stall => me.stalled.store(true, SeqCst),
            Fault::ShortWrites(n) => me.piece.store(n.max(1), SeqCst),
            Fault::Reset => {
                me.stalled.store(true, SeqCst);
                let real = self.wait_unread();
                self.state.reset_real.store(real, SeqCst);
                self.state.closing.store(true, SeqCst);
            }
        }
        me.fired.store(true, SeqCst);
    }

    /// Waits until the source has sent bytes the relay has not read.
    fn wait_unread(&self) -> bool {
        let deadline = Instant::now() + RESET_WAIT;
        let mut probe = [0u8; 1];
        while Instant::now() < deadline {
            match self.src.peek(&mut probe) {
                Ok(n) => return n > 0,
                Err(e) if is_timeout(&e) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Writes all of `data` (in pieces if asked). False if the relay is stopping.
    fn write_all(&self, data: &[u8]) -> bool {
        let mut off = 0;
        while off < data.len() {
            if self.state.stopping() {
                return false;
            }
            let piece = self.me().piece.load(SeqCst);
            let end = if piece == 0 {
                data.len()
            } else {
                (off + piece).min(data.len())
            };
            match (&self.dst).write(&data[off..end]) {
                Ok(0) => {
                    self.state.failed.store(true, SeqCst);
                    return false;
                }
                Ok(n) => off += n,
                Err(e) if is_timeout(&e) => {}
                Err(_) => {
                    self.state.failed.store(true, SeqCst);
                    return false;
                }
            }
        }
        true
    }
}

enum Due {
    Fire(Fault),
    Limit(usize),
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}
