//! The raw end of a test connection: the far end driven by hand, without a peer, in plaintext
//! or inside Noise (see the parent module).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use syncpeer::Socket;
use syncpeer::noise::{NoiseReader, NoiseSession, NoiseWriter, ReadError};
use syncpeer::proto::{FrameDecoder, MultiplexMessage};

use super::{
    End, Security, SocketIo, Transport, WAIT, init_logging, noise_handshake, plain_tcp_pair,
};

/// The far end of a connection driven by hand, without a peer: it reads and writes the bytes
/// of frames. Over Noise it seals every `write` into Noise messages (one call, one run of
/// messages) and opens what it reads, so the test sees plaintext either way; the methods
/// named `ciphertext` reach under that, to forge or tamper with Noise messages.
#[derive(Debug)]
pub struct Raw {
    sock: RawSock,
    noise: Option<RawNoise>,
}

#[derive(Debug)]
pub enum RawSock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

#[derive(Debug)]
struct RawNoise {
    writer: NoiseWriter,
    reader: NoiseReader,
    /// Opened and not yet returned.
    plain: BytesMut,
    /// What the reader said at EOF: `Err` if the stream ended inside a Noise message.
    end: Option<Result<(), ReadError>>,
}

impl Read for RawSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            RawSock::Tcp(s) => s.read(buf),
            RawSock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for RawSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            RawSock::Tcp(s) => s.write(buf),
            RawSock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Raw {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(n) = &mut self.noise else {
            return self.sock.read(buf);
        };
        let mut cipher = [0u8; 16 * 1024];
        while n.plain.is_empty() {
            // Timeouts and errors pass through; what was read stays in the Noise reader.
            let got = self.sock.read(&mut cipher)?;
            if got == 0 {
                n.end = Some(n.reader.finish());
                return Ok(0);
            }
            n.reader
                .decrypt(&cipher[..got], &mut n.plain)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        let k = buf.len().min(n.plain.len());
        buf[..k].copy_from_slice(&n.plain[..k]);
        n.plain.advance(k);
        Ok(k)
    }
}

impl Write for Raw {
    /// Plaintext: the whole of `buf`. Over Noise, sealed and written whole; an error part way
    /// leaves a Noise message cut, after which nothing written makes sense to the peer.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(n) = &mut self.noise else {
            return self.sock.write(buf);
        };
        let mut sealed = BytesMut::new();
        n.writer
            .encrypt([buf], &mut sealed)
            .map_err(io::Error::other)?;
        self.sock.write_all(&sealed)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Raw {
    /// A raw end on `sock`, inside `session` if there is one.
    pub fn new(sock: RawSock, session: Option<NoiseSession>) -> Raw {
        let noise = session.map(|s| {
            let (writer, reader) = s.split();
            RawNoise {
                writer,
                reader,
                plain: BytesMut::new(),
                end: None,
            }
        });
        Raw { sock, noise }
    }

    pub fn is_noise(&self) -> bool {
        self.noise.is_some()
    }

    /// Bounds every later read and write by `t`.
    pub fn set_timeouts(&self, t: Duration) {
        self.set_read_timeout(t);
        match &self.sock {
            RawSock::Tcp(s) => s.set_write_timeout(Some(t)).unwrap(),
            RawSock::Unix(s) => s.set_write_timeout(Some(t)).unwrap(),
        }
    }

    /// Bounds every later read by `t`.
    pub fn set_read_timeout(&self, t: Duration) {
        match &self.sock {
            RawSock::Tcp(s) => s.set_read_timeout(Some(t)).unwrap(),
            RawSock::Unix(s) => s.set_read_timeout(Some(t)).unwrap(),
        }
    }

    pub fn shutdown_write(&self) {
        self.shutdown(Shutdown::Write);
    }

    pub fn shutdown(&self, how: Shutdown) {
        let _ = match &self.sock {
            RawSock::Tcp(s) => s.shutdown(how),
            RawSock::Unix(s) => s.shutdown(how),
        };
    }

    /// Seals `plain` into Noise messages without writing them (the nonce advances: what is
    /// written next must be these bytes, or the peer refuses it). Panics in plaintext.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let n = self.noise.as_mut().expect("a Noise raw end");
        let mut sealed = BytesMut::new();
        n.writer.encrypt([plain], &mut sealed).expect("nonce left");
        sealed.to_vec()
    }

    /// Writes `bytes` to the socket as they are, under any Noise (to forge or tamper).
    pub fn write_ciphertext(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Over Noise, what the stream's end said: `Some(Err(..))` if it ended inside a Noise
    /// message (the peer's writer gave up part way), `None` before the end or in plaintext.
    pub fn noise_end(&self) -> Option<Result<(), ReadError>> {
        self.noise.as_ref().and_then(|n| n.end)
    }

    /// Reads the next frame, waiting at most [`WAIT`] in all; `None` at a clean EOF.
    #[track_caller]
    pub fn read_frame(&mut self, decoder: &mut FrameDecoder) -> Option<MultiplexMessage> {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = decoder.decode().expect("the peer sends valid frames") {
                return Some(m);
            }
            assert!(Instant::now() < deadline, "no frame within {WAIT:?}");
            match self.read(&mut buf) {
                Ok(0) => {
                    assert!(decoder.is_idle(), "EOF inside a frame");
                    assert!(
                        !matches!(self.noise_end(), Some(Err(_))),
                        "EOF inside a Noise message"
                    );
                    return None;
                }
                Ok(n) => decoder.extend(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("raw read failed: {e}"),
            }
        }
    }

    /// Reads until EOF (bounded by [`WAIT`]) and returns every byte (over Noise, the plaintext
    /// of every whole Noise message; see [`noise_end`](Raw::noise_end) for a cut one).
    #[track_caller]
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        self.set_timeouts(WAIT);
        let mut all = Vec::new();
        self.read_to_end(&mut all).expect("raw read to EOF in time");
        all
    }
}

/// A peer's socket and, connected to it, a raw end driven by the test; secured as
/// [`Security::current`] says (the peer's end dials).
pub fn raw_pair(kind: Transport) -> (End, Raw) {
    raw_pair_with(kind, Security::current())
}

/// [`raw_pair`] with the security given.
pub fn raw_pair_with(kind: Transport, security: Security) -> (End, Raw) {
    init_logging();
    let (socket, sock) = match kind {
        Transport::Tcp => {
            let (a, b) = plain_tcp_pair();
            b.set_nodelay(true).unwrap();
            (Socket::from(a), RawSock::Tcp(b))
        }
        Transport::Unix => {
            let (a, b) = UnixStream::pair().expect("socketpair");
            (Socket::from(a), RawSock::Unix(b))
        }
    };
    secured_raw_with(socket, sock, security)
}

/// Secures a peer's socket and a raw end connected to it (through a relay, say) as
/// [`Security::current`] says.
#[track_caller]
pub fn secured_raw(socket: Socket, sock: RawSock) -> (End, Raw) {
    secured_raw_with(socket, sock, Security::current())
}

/// [`secured_raw`] with the security given.
#[track_caller]
pub fn secured_raw_with(socket: Socket, mut sock: RawSock, security: Security) -> (End, Raw) {
    if !security.is_noise() {
        let end = End {
            socket,
            session: None,
        };
        return (end, Raw::new(sock, None));
    }
    match &sock {
        RawSock::Tcp(s) => s.set_read_timeout(Some(WAIT)).unwrap(),
        RawSock::Unix(s) => s.set_read_timeout(Some(WAIT)).unwrap(),
    }
    let (ours, theirs) = noise_handshake(&mut SocketIo(&socket), &mut sock);
    let end = End {
        socket,
        session: Some(ours),
    };
    (end, Raw::new(sock, Some(theirs)))
}
