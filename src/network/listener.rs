//! The listener thread (`syncpeer-listener`), one per `listen` call. It waits only in a
//! `mio::Poll` over the listening socket, a `Waker` (to stop) and the sockets of the inbound
//! connections still in their handshake, with the earliest handshake deadline as the poll's
//! timeout. Handshakes are driven here, non-blocking, so a slow or silent client holds no
//! thread: it only occupies one of `max_pending_handshakes` slots until its deadline.
//!
//! On accept it writes its hello at once (69 bytes into an empty send buffer never blocks),
//! then reads the remote's hello as it arrives and checks it (`handshake.rs`). A refused or
//! timed-out handshake is logged and the socket closed; an accepted one is handed to the
//! network, which spawns the peer and places it in the peer table.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::Inner;
use super::error::HandshakeError;
use super::event::ConnectionOrigin;
use super::handshake::{HELLO_LEN, Hello};
use super::health::HEALTH_CHECK_PROTOCOL;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_HANDSHAKE: usize = 2;

/// A running listener: wake it to stop it.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Listener {
    /// Starts accepting on `listener` (already bound).
    pub(crate) fn spawn(inner: Arc<Inner>, listener: TcpListener) -> io::Result<Listener> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let run = Accept {
            inner,
            listener,
            poll,
            stop: stop.clone(),
            pending: HashMap::new(),
            next_token: FIRST_HANDSHAKE,
        };
        let thread = std::thread::Builder::new()
            .name("syncpeer-listener".into())
            .stack_size(256 * 1024)
            .spawn(move || run.run())?;
        Ok(Listener {
            addr,
            waker,
            stop,
            thread,
        })
    }

    /// Stops accepting, drops the handshakes in progress and joins the thread.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if self.thread.join().is_err() {
            log::error!("listener on {} panicked", self.addr);
        }
    }
}

/// An inbound connection in its handshake.
struct Handshake {
    stream: TcpStream,
    from: SocketAddr,
    buf: [u8; HELLO_LEN],
    filled: usize,
    deadline: Instant,
}

struct Accept {
    inner: Arc<Inner>,
    listener: TcpListener,
    poll: Poll,
    stop: Arc<AtomicBool>,
    pending: HashMap<Token, Handshake>,
    next_token: usize,
}

impl Accept {
    fn run(mut self) {
        let local = self.inner.local.peer_id;
        log::debug!(
            "network {local}: listening on {:?}",
            self.listener.local_addr()
        );
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self
                .pending
                .values()
                .map(|h| h.deadline)
                .min()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != ErrorKind::Interrupted
            {
                log::error!("network {local}: listener poll failed: {e}");
                break;
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    t => self.progress(t),
                }
            }
            self.expire();
        }
        log::debug!(
            "network {local}: listener exits ({} handshakes dropped)",
            self.pending.len()
        );
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, from)) => self.start(stream, from),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // E.g. out of descriptors: retried when the next connection arrives.
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn start(&mut self, stream: TcpStream, from: SocketAddr) {
        if self.pending.len() >= self.inner.config.max_pending_handshakes {
            log::warn!("refused connection from {from}: too many handshakes in progress");
            return;
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        let hello = self.inner.local.encode();
        let ready = stream
            .set_nonblocking(true)
            .and_then(|()| stream.set_nodelay(true))
            .and_then(|()| (&stream).write(&hello))
            .and_then(|n| match n {
                HELLO_LEN => Ok(()),
                _ => Err(io::Error::new(
                    ErrorKind::WriteZero,
                    "hello not written whole",
                )),
            })
            .and_then(|()| {
                self.poll.registry().register(
                    &mut SourceFd(&stream.as_raw_fd()),
                    token,
                    Interest::READABLE,
                )
            });
        if let Err(e) = ready {
            return refused(from, &HandshakeError::Io(e));
        }
        let h = Handshake {
            stream,
            from,
            buf: [0; HELLO_LEN],
            filled: 0,
            deadline: Instant::now() + self.inner.config.handshake_timeout,
        };
        self.pending.insert(token, h);
        // The hello may already be there: edge-triggered polls report only new data.
        self.progress(token);
    }

    /// Reads what has arrived of a remote's hello and acts on it once it is complete.
    fn progress(&mut self, token: Token) {
        let Some(h) = self.pending.get_mut(&token) else {
            return;
        };
        let outcome = loop {
            match (&h.stream).read(&mut h.buf[h.filled..]) {
                Ok(0) => break Err(HandshakeError::Closed),
                Ok(n) => {
                    h.filled += n;
                    match Hello::parse(&h.buf[..h.filled]) {
                        Ok(None) => {}
                        Ok(Some(hello)) => break Ok(hello),
                        Err(e) => break Err(e),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(HandshakeError::Io(e)),
            }
        };
        let Some(h) = self.pending.remove(&token) else {
            return;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&h.stream.as_raw_fd()));
        let checked = outcome.and_then(|remote| {
            self.inner
                .local
                .check(&remote, HEALTH_CHECK_PROTOCOL)
                .map(|()| remote)
        });
        match checked {
            Err(e) => refused(h.from, &e),
            Ok(remote) => {
                if let Err(e) = self
                    .inner
                    .admit(h.stream, remote, ConnectionOrigin::Inbound)
                {
                    log::warn!("inbound connection from {} not admitted: {e}", h.from);
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<Token> = self
            .pending
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some(h) = self.pending.remove(&t) {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&h.stream.as_raw_fd()));
                refused(h.from, &HandshakeError::TimedOut);
            }
        }
    }
}

fn refused(from: SocketAddr, e: &HandshakeError) {
    log::warn!("refused inbound connection from {from}: {e}");
}
