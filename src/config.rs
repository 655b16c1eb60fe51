//! [`PeerConfig`]: the limits and timeouts of one connection, their defaults (the original's),
//! and their validation, done once when a peer is spawned.

use std::fmt;
use std::time::Duration;

use crate::proto::SessionConfig;
use crate::proto::stream::FRAME_OVERHEAD;
use crate::sched::ThreadTuning;

/// Limits and timeouts of one connection.
///
/// The defaults are the async original's. Validate with [`PeerConfig::validate`]
/// (`Peer::builder(..).spawn()` does it for you).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Largest frame, in message bytes after the 4-byte length prefix. Default 4 MiB.
    pub max_frame_size: usize,
    /// Largest message payload; larger ones are streamed up to this size. Default 64 MiB.
    pub max_message_size: usize,
    /// How long the local application has to answer an inbound RPC. Default 10 s.
    pub inbound_rpc_timeout: Duration,
    /// Inbound RPCs handed to the application at once; more are dropped. Default 100.
    pub max_concurrent_inbound_rpcs: usize,
    /// Outbound RPCs waiting for a response at once; more fail with `TooManyPending`.
    /// Default 100.
    pub max_concurrent_outbound_rpcs: usize,
    /// Direct sends and RPC requests the outbox holds before the mux takes them. A send waits,
    /// or `try_send` reports `Full`, while it holds this many; responses are not counted
    /// (there is at most one per admitted inbound request). Default 1024.
    pub outbox_capacity: usize,
    /// How long a write may make no progress before the connection is declared broken.
    /// Default 30 s.
    pub write_timeout: Duration,
    /// How long a graceful close may take, from its start, to deliver what was accepted and
    /// to wait for RPCs in flight. Default 5 s.
    pub linger: Duration,
    /// How long the reader, the mux and the writer keep polling after their last input before
    /// they park.
    /// A parked thread on an idle core takes about 25 µs to wake on the 2-core VMs this was
    /// measured on, and an answer often comes sooner than that; polling trades CPU time for
    /// it: at most `spin` of one core per thread after each burst of traffic, nothing on an
    /// idle connection. At most two connection threads per core poll at a time, process-wide
    /// (with many busy connections the cores are not idle, and polling would only take time
    /// from them); the others park at once. Zero parks at once. Default 50 µs.
    pub spin: Duration,
    /// How the connection's threads ask the operating system to schedule them: a short slice
    /// so that a woken thread preempts a CPU-bound task instead of waiting out its slice
    /// (milliseconds on a busy machine), CPU affinity. See [`ThreadTuning`]; apply the same to
    /// the application's threads on the message path. Default: nothing asked.
    pub threads: ThreadTuning,
}

impl Default for PeerConfig {
    fn default() -> PeerConfig {
        PeerConfig {
            max_frame_size: 4 * 1024 * 1024,
            max_message_size: 64 * 1024 * 1024,
            inbound_rpc_timeout: Duration::from_secs(10),
            max_concurrent_inbound_rpcs: 100,
            max_concurrent_outbound_rpcs: 100,
            outbox_capacity: 1024,
            write_timeout: Duration::from_secs(30),
            linger: Duration::from_secs(5),
            spin: Duration::from_micros(50),
            threads: ThreadTuning::default(),
        }
    }
}

/// A [`PeerConfig`] field out of range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    /// The offending field's name.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Smallest frame size accepted: room for the stream overhead and a useful payload.
const MIN_FRAME_SIZE: usize = FRAME_OVERHEAD + 64;

impl PeerConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first field out of range: a frame size under 128 bytes or
    /// over `u32::MAX`; a message size smaller than a frame or needing more than 255 fragments;
    /// a zero limit, capacity or timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason: String| Err(ConfigError { field, reason });
        if self.max_frame_size < MIN_FRAME_SIZE || self.max_frame_size > u32::MAX as usize {
            return err(
                "max_frame_size",
                format!(
                    "{} is outside {MIN_FRAME_SIZE}..={}",
                    self.max_frame_size,
                    u32::MAX
                ),
            );
        }
        let fragments = self.max_message_size / self.max_frame_size;
        // The header carries one fragment's worth and at most 255 fragments follow.
        let streamable = (self.max_frame_size - FRAME_OVERHEAD) * 256;
        if fragments == 0 || fragments > 255 || self.max_message_size > streamable {
            return err(
                "max_message_size",
                format!(
                    "{} must be between 1 frame of {} and at most 256 fragments of it",
                    self.max_message_size, self.max_frame_size
                ),
            );
        }
        for (field, value) in [
            (
                "max_concurrent_inbound_rpcs",
                self.max_concurrent_inbound_rpcs,
            ),
            (
                "max_concurrent_outbound_rpcs",
                self.max_concurrent_outbound_rpcs,
            ),
            ("outbox_capacity", self.outbox_capacity),
        ] {
            if value == 0 {
                return err(field, "must be at least 1".into());
            }
        }
        if self.threads.cpus.as_ref().is_some_and(Vec::is_empty) {
            return err(
                "threads",
                "an empty cpu set leaves the threads nowhere to run".into(),
            );
        }
        for (field, value) in [
            ("inbound_rpc_timeout", self.inbound_rpc_timeout),
            ("write_timeout", self.write_timeout),
            ("linger", self.linger),
        ] {
            if value.is_zero() {
                return err(field, "must be longer than zero".into());
            }
        }
        Ok(())
    }

    /// The largest payload a send, RPC or response accepts: `max_message_size`, or less when
    /// frames are so small that the remote's fragment limit (`max_message_size /
    /// max_frame_size` fragments of `max_frame_size − 64` bytes, plus the header's share)
    /// cannot carry that much. Equal to `max_message_size` with the defaults.
    pub fn max_payload(&self) -> usize {
        crate::proto::stream::max_payload(self.max_frame_size, self.max_message_size)
    }

    pub(crate) fn session(&self) -> SessionConfig {
        SessionConfig {
            max_frame_size: self.max_frame_size,
            max_message_size: self.max_message_size,
            max_concurrent_outbound_rpcs: self.max_concurrent_outbound_rpcs,
            max_concurrent_inbound_rpcs: self.max_concurrent_inbound_rpcs,
            inbound_rpc_timeout: self.inbound_rpc_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals_and_valid() {
        let c = PeerConfig::default();
        assert_eq!(c.max_frame_size, 4_194_304);
        assert_eq!(c.max_message_size, 67_108_864);
        assert_eq!(c.max_message_size / c.max_frame_size, 16);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.max_payload(), c.max_message_size);
        let small = PeerConfig {
            max_frame_size: 128,
            max_message_size: 2560,
            ..Default::default()
        };
        assert_eq!(
            small.max_payload(),
            64 * 21,
            "20 fragments of 64 bytes plus the header's"
        );
    }

    #[test]
    fn rejects_out_of_range() {
        let bad = [
            PeerConfig {
                max_frame_size: 100,
                ..Default::default()
            },
            PeerConfig {
                max_message_size: 1000,
                ..Default::default()
            },
            PeerConfig {
                max_frame_size: 1024,
                max_message_size: 256 * 1024,
                ..Default::default()
            },
            PeerConfig {
                outbox_capacity: 0,
                ..Default::default()
            },
            PeerConfig {
                linger: Duration::ZERO,
                ..Default::default()
            },
        ];
        let fields: Vec<_> = bad
            .iter()
            .map(|c| c.validate().unwrap_err().field())
            .collect();
        assert_eq!(
            fields,
            [
                "max_frame_size",
                "max_message_size",
                "max_message_size",
                "outbox_capacity",
                "linger"
            ]
        );
    }
}
