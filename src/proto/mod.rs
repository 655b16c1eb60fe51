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
