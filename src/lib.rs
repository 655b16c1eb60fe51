//! syncpeer: one connection to a remote peer, driven by plain OS threads.
#![deny(missing_docs)]
pub mod keyed;
