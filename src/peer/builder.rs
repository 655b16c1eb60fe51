//! [`Peer::builder`]: collects the socket, the configuration and the handlers, then spawns the
//! three threads of one connection and wires their channels.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use crossbeam_channel::Sender;

use super::close;
use super::handle::{HandleInner, PeerHandle};
use super::handler::{Handler, Handlers};
use super::metrics::Counters;
use super::mux::Mux;
use super::outbox::Outbox;
use super::reader::Reader;
use super::shared::{Shared, Threads};
use super::socket::Socket;
use super::transport::Security;
use super::writer::Writer;
use super::{DisconnectReason, Disconnected, PeerId, THREAD_STACK};
use crate::config::PeerConfig;
use crate::noise::{NoiseReader, NoiseSession, NoiseWriter};
use crate::proto::ProtocolId;

/// Capacity of the reader → mux channel. It carries RPC traffic and malformed frames only,
/// the mux takes from it first, and crossbeam preallocates every slot (80 bytes each), so it
/// is kept small.
const INBOUND_CAPACITY: usize = 16;

/// Capacity of the frames channel, in batches. The writer takes every batch queued at once, and
/// the mux grows its batch while the channel is full, so one slot is enough for throughput
/// (measured: the same 64 B rates with one slot as with four). It also bounds what is handed
/// to the writer ahead of a small message sent behind a streamed one: a batch can hold a whole
/// 4 MiB fragment, and with four slots up to nine fragments went out before the small message
/// (`tests/peer_stream.rs`), with one slot three or four.
const FRAMES_CAPACITY: usize = 1;

/// Entry point: see [`Peer::builder`].
#[derive(Debug)]
pub struct Peer(());

impl Peer {
    /// Starts describing a peer on an established `socket` (a `std::net::TcpStream` or a
    /// `std::os::unix::net::UnixStream`).
    pub fn builder(socket: impl Into<Socket>) -> PeerBuilder {
        PeerBuilder {
            socket: socket.into(),
            config: PeerConfig::default(),
            remote: PeerId::default(),
            handlers: vec![None; 256],
            on_disconnect: None,
            security: Security::Plain,
        }
    }
}

/// Configures and spawns a peer.
#[derive(Debug)]
pub struct PeerBuilder {
    socket: Socket,
    config: PeerConfig,
    remote: PeerId,
    handlers: Vec<Option<Handler>>,
    on_disconnect: Option<Sender<Disconnected>>,
    security: Security,
}

impl PeerBuilder {
    /// Sets the configuration (default: [`PeerConfig::default`]).
    pub fn config(mut self, config: PeerConfig) -> PeerBuilder {
        self.config = config;
        self
    }

    /// Sets the remote's id, used in `Inbound::from`, logs and `Disconnected`.
    pub fn remote_peer_id(mut self, id: PeerId) -> PeerBuilder {
        self.remote = id;
        self
    }

    /// Runs the connection inside `session`, a Noise session established on this socket
    /// (see [`noise`](crate::noise): the handshake runs before the peer, on the dialer's
    /// thread or the listener's). The writer thread seals every frame with the session's
    /// sending half and the reader thread opens what it reads with the receiving half; nothing
    /// else changes. Also sets the remote's id to the one the session authenticated (a later
    /// [`remote_peer_id`](PeerBuilder::remote_peer_id) overrides it).
    ///
    /// Without this (or [`noise_halves`](PeerBuilder::noise_halves)) frames go to the socket
    /// in plaintext.
    pub fn noise(mut self, session: NoiseSession) -> PeerBuilder {
        self.remote = session.remote_peer_id();
        let (writer, reader) = session.split();
        self.security = Security::Noise(Box::new((writer, reader)));
        self
    }

    /// Like [`noise`](PeerBuilder::noise), for a session already split and used: a caller
    /// that ran its own exchange inside the session before the peer (as the
    /// [`Network`](crate::Network) runs the Aptos handshake) hands over both halves, with
    /// their nonces where that exchange left them. The reader half must be at a message
    /// boundary (nothing of a message read but not opened). The remote's id is not changed.
    pub fn noise_halves(mut self, writer: NoiseWriter, reader: NoiseReader) -> PeerBuilder {
        self.security = Security::Noise(Box::new((writer, reader)));
        self
    }

    /// Routes inbound direct sends and RPC requests of `protocol` to `handler`. Messages of a
    /// protocol with no handler are dropped and counted (as the original does).
    pub fn handler(mut self, protocol: ProtocolId, handler: impl Into<Handler>) -> PeerBuilder {
        self.handlers[usize::from(protocol.0)] = Some(handler.into());
        self
    }

    /// Where the one `Disconnected` notice goes when the connection has closed.
    pub fn on_disconnect(mut self, tx: Sender<Disconnected>) -> PeerBuilder {
        self.on_disconnect = Some(tx);
        self
    }

    /// Validates the configuration and starts the reader, mux and writer threads.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an invalid [`PeerConfig`]; any error from making the socket
    /// non-blocking, duplicating it, creating the polls or spawning the threads.
    pub fn spawn(self) -> io::Result<PeerHandle> {
        self.config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (read_half, write_half) = self.socket.split()?;
        let reader_poll = mio::Poll::new()?;
        let reader_waker = mio::Waker::new(reader_poll.registry(), super::reader::WAKER)?;

        let counters = Arc::new(Counters::default());
        let (outbox, outbox_rx) = Outbox::new(self.config.outbox_capacity, counters.clone());
        let (inbound_tx, inbound_rx) = crossbeam_channel::bounded(INBOUND_CAPACITY);
        let (frames_tx, frames_rx) = crossbeam_channel::bounded(FRAMES_CAPACITY);
        let (reader_done_tx, reader_done_rx) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(Shared::new(
            self.config,
            self.remote,
            outbox,
            counters,
            reader_waker,
        ));
        let handlers = Handlers::new(self.handlers);
        let (sealing, opening) = self.security.split();

        // If a spawn fails, the threads already running end on their own: the writer when
        // every sender of the frames channel is dropped (here, on return), the reader when
        // told to stop.
        let writer = Writer::new(shared.clone(), write_half, frames_rx, sealing);
        let writer = spawn_named("syncpeer-writer", &shared, move || writer.run())?;
        let reader = Reader::new(
            shared.clone(),
            read_half,
            reader_poll,
            handlers.clone(),
            inbound_tx,
            reader_done_tx,
            opening,
        );
        let reader = spawn_named("syncpeer-reader", &shared, move || reader.run())?;
        let mux = Mux::new(
            shared.clone(),
            handlers,
            outbox_rx.clone(),
            inbound_rx,
            frames_tx.clone(),
        );
        let mux = match spawn_named("syncpeer-mux", &shared, move || mux.run()) {
            Ok(t) => t,
            Err(e) => {
                shared.stop_reader();
                return Err(e);
            }
        };
        let threads = Threads {
            mux,
            writer,
            reader,
            reader_done: reader_done_rx,
            frames: frames_tx,
            outbox: outbox_rx,
            on_disconnect: self.on_disconnect,
        };
        // A connection thread may have started the close already (an immediate EOF): then it
        // found no threads to close, and the close is run from here.
        if let Some(threads) = shared.install_threads(threads) {
            close::spawn_closer(shared.clone(), threads);
        }
        log::debug!("peer {}: spawned", shared.remote);
        Ok(PeerHandle {
            inner: Arc::new(HandleInner { shared }),
        })
    }
}

/// Spawns one of the connection's threads: named, small-stacked, marked as the connection's
/// own (see `JoinError::OwnThread`), and closing the connection if it panics.
fn spawn_named(
    name: &str,
    shared: &Arc<Shared>,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    let shared = shared.clone();
    let name = name.to_owned();
    std::thread::Builder::new()
        .name(name.clone())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            super::mark_own_thread(&shared);
            let tuning = &shared.config.threads;
            if !tuning.is_default()
                && let Err(e) = tuning.apply_to_current_thread()
            {
                // Tuning never fails a connection: it runs untuned (or with what applied).
                log::debug!("peer {}: {name}: thread tuning refused: {e}", shared.remote);
            }
            let _guard = CloseOnPanic {
                shared,
                thread: name,
            };
            f();
        })
}

/// Starts the close if the thread it lives on panics, so that a panic on any connection
/// thread ends the connection with a reason instead of leaving it half alive.
struct CloseOnPanic {
    shared: Arc<Shared>,
    thread: String,
}

impl Drop for CloseOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            log::error!("peer {}: {} panicked", self.shared.remote, self.thread);
            let shared = &self.shared;
            shared.panicked.store(true, SeqCst);
            if self.thread == "syncpeer-writer" {
                shared.write_failed.store(true, SeqCst);
            }
            close::start(&self.shared, DisconnectReason::InputOutputError, false);
        }
    }
}
