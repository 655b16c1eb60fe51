//! Error types of the keyed channel, one per operation in the style of crossbeam-channel:
//! construction (`InvalidCapacity`), push (`SendError`) and the receive family (`RecvError`,
//! `TryRecvError`, `RecvTimeoutError`).

use std::fmt;

/// [`channel`](super::channel) was asked for a capacity of zero messages per key.
///
/// A zero capacity would drop (FIFO) or immediately evict (LIFO, KLAST) every message, so it is
/// treated as caller misuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCapacity;

impl fmt::Display for InvalidCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("capacity per key must be at least 1")
    }
}

impl std::error::Error for InvalidCapacity {}

/// A push was refused because the [`Receiver`](super::Receiver) is gone; the refused value is
/// handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// Takes back the value that could not be pushed.
    pub fn into_inner(self) -> T {
        self.0
    }
}

// Written by hand so that `unwrap()` works whatever the message type is.
impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError { .. }")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pushing on a keyed channel whose receiver is gone")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// A blocking receive found the channel empty and every [`Sender`](super::Sender) gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on an empty keyed channel whose senders are all gone")
    }
}

impl std::error::Error for RecvError {}

/// Why [`Receiver::try_recv`](super::Receiver::try_recv) returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is queued, but a sender may still push.
    Empty,
    /// Nothing is queued and every sender is gone: nothing will ever arrive.
    Disconnected,
}

impl TryRecvError {
    /// Whether nothing was queued but senders remain.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    /// Whether the channel is drained and every sender is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("receiving on an empty keyed channel"),
            Self::Disconnected => RecvError.fmt(f),
        }
    }
}

impl std::error::Error for TryRecvError {}

impl From<RecvError> for TryRecvError {
    fn from(_: RecvError) -> Self {
        Self::Disconnected
    }
}

/// Why [`Receiver::recv_timeout`](super::Receiver::recv_timeout) or
/// [`Receiver::recv_deadline`](super::Receiver::recv_deadline) returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// Nothing arrived before the deadline, but a sender may still push.
    Timeout,
    /// Nothing is queued and every sender is gone: nothing will ever arrive.
    Disconnected,
}

impl RecvTimeoutError {
    /// Whether the deadline passed with senders remaining.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Whether the channel is drained and every sender is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting on a keyed channel"),
            Self::Disconnected => RecvError.fmt(f),
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

impl From<RecvError> for RecvTimeoutError {
    fn from(_: RecvError) -> Self {
        Self::Disconnected
    }
}
