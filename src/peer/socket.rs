//! The transports a peer runs on: a TCP or Unix stream, split into a read half and a write
//! half (two descriptors for one socket), both non-blocking and driven by mio.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::{Interest, Registry, Token};

/// An established stream socket to hand to [`Peer::builder`](crate::Peer::builder).
#[derive(Debug)]
pub enum Socket {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix-domain stream connection.
    Unix(std::os::unix::net::UnixStream),
}

impl From<std::net::TcpStream> for Socket {
    fn from(s: std::net::TcpStream) -> Socket {
        Socket::Tcp(s)
    }
}

impl From<std::os::unix::net::UnixStream> for Socket {
    fn from(s: std::os::unix::net::UnixStream) -> Socket {
        Socket::Unix(s)
    }
}

/// One non-blocking half of the connection.
#[derive(Debug)]
pub(crate) enum Half {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Socket {
    /// Two non-blocking handles on the same socket: (read half, write half).
    pub(crate) fn split(self) -> io::Result<(Half, Half)> {
        match self {
            Socket::Tcp(s) => {
                s.set_nonblocking(true)?;
                // Frames are batched by the writer; Nagle would only add delay.
                s.set_nodelay(true)?;
                let w = s.try_clone()?;
                Ok((
                    Half::Tcp(mio::net::TcpStream::from_std(s)),
                    Half::Tcp(mio::net::TcpStream::from_std(w)),
                ))
            }
            Socket::Unix(s) => {
                s.set_nonblocking(true)?;
                let w = s.try_clone()?;
                Ok((
                    Half::Unix(mio::net::UnixStream::from_std(s)),
                    Half::Unix(mio::net::UnixStream::from_std(w)),
                ))
            }
        }
    }
}

impl Half {
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Half::Tcp(s) => s.shutdown(how),
            Half::Unix(s) => s.shutdown(how),
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Half::Tcp(s) => s.read(buf),
            Half::Unix(s) => s.read(buf),
        }
    }

    /// Takes `&self`, as `std::io::Write for &TcpStream` does; only the writer thread holds
    /// the write half.
    pub(crate) fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Half::Tcp(s) => (&*s).write_vectored(bufs),
            Half::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Half::Tcp(s) => s.as_raw_fd(),
            Half::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Source for Half {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Half::Tcp(s) => s.register(registry, token, interests),
            Half::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Half::Tcp(s) => s.reregister(registry, token, interests),
            Half::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Half::Tcp(s) => s.deregister(registry),
            Half::Unix(s) => s.deregister(registry),
        }
    }
}
