//! The sans-IO protocol core: messages and their wire layout, framing, streaming of large
//! messages, RPC bookkeeping and the [`Session`] that ties them together.
//!
//! Nothing here does I/O, spawns a thread or reads the clock; every time-dependent call takes
//! `now: Instant`. The threads in `peer` drive these types.

pub mod codec;
pub mod message;
pub mod rpc;
pub mod session;
pub mod stream;

pub use codec::{FrameDecoder, FrameError, FrameTooLarge, encode_frame, encode_frame_split};
pub use message::{
    DecodeError, DirectSendMsg, ErrorCode, MultiplexMessage, NetworkMessage, NotSupportedKind,
    ProtocolId, RequestId, RpcRequest, RpcResponse, StreamFragment, StreamHeader, StreamId,
    StreamMessage,
};
pub use session::{
    Completion, Event, Leftovers, RpcFailure, RpcRefused, Session, SessionConfig, Transmit,
};
pub use stream::{MessageTooLarge, OutboundStream, Reassembler, StreamError};

use std::time::{Duration, Instant};

/// Stands in for "never" where a deadline must be an `Instant`: thirty years.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + d`, saturated: a duration too long to add (such as `Duration::MAX`, a common way
/// to say "no limit") gives a deadline thirty years away instead of a panic.
pub(crate) fn deadline_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(FAR_FUTURE))
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}
