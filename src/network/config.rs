//! [`NetworkConfig`], [`HealthCheckConfig`] and [`ReconnectConfig`]: what the handshake
//! announces (chain and network), the timeouts of dialing and of the handshake,
//! the limit on handshakes in progress, the health checker's schedule and the redial backoff,
//! with their defaults and their validation (done once, when the network is built).

use std::time::Duration;

use super::error::BuildError;
use super::handshake::{ChainId, NetworkId};

/// Settings of a [`Network`](super::Network) beyond those of each connection
/// ([`PeerConfig`](crate::PeerConfig)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The chain this node is on, announced in the handshake; a remote on another chain is
    /// refused. Default [`ChainId::default`] (4, the original's `TESTING`).
    pub chain_id: ChainId,
    /// The network this node's connections belong to, announced in the handshake; a remote on
    /// another network is refused. Default `Public` (the original's default).
    pub network_id: NetworkId,
    /// How long a dial waits for the TCP connection to be established. Default 30 s (the
    /// original's `TRANSPORT_TIMEOUT`).
    pub dial_timeout: Duration,
    /// How long either side waits for the upgrade (identity and handshake) to complete once
    /// the TCP connection is up. Default 10 s.
    pub handshake_timeout: Duration,
    /// Inbound connections allowed to be in their handshake at once; more are closed at once.
    /// Default 128.
    pub max_pending_handshakes: usize,
    /// Periodic pings of every peer, or `None` for no checks. The network answers pings in
    /// either case. Default: [`HealthCheckConfig::default`].
    pub health_check: Option<HealthCheckConfig>,
    /// When the peers named with [`keep_connected`](super::Network::keep_connected) are
    /// redialed. Default: [`ReconnectConfig::default`].
    pub reconnect: ReconnectConfig,
}

impl Default for NetworkConfig {
    fn default() -> NetworkConfig {
        NetworkConfig {
            chain_id: ChainId::default(),
            network_id: NetworkId::default(),
            dial_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 128,
            health_check: Some(HealthCheckConfig::default()),
            reconnect: ReconnectConfig::default(),
        }
    }
}

/// The redial schedule of a kept peer that is not connected, as the original's connectivity
/// manager has it: exponential backoff (`ExponentialBackoff::from_millis(2).factor(1000)`,
/// capped at `max_connection_delay_ms` 60 000) plus a random jitter below 100 ms.
///
/// After the peer is named or its connection is lost, the first attempt starts within
/// `jitter`; after the n-th failed attempt in a row the next starts
/// `min(initial_delay * multiplier^(n-1), max_delay)` plus a jitter later. A connection
/// resets the schedule. (The original also waits one backoff step before its first attempt,
/// and notices a lost peer only at its next connectivity check, every 5 s; here the loss
/// reaches the dialer at once.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectConfig {
    /// Delay after the first failed attempt. Default 2 s.
    pub initial_delay: Duration,
    /// Factor between two consecutive delays. Default 2.
    pub multiplier: u32,
    /// Longest delay, before jitter. Default 60 s.
    pub max_delay: Duration,
    /// Upper bound (exclusive) of the random delay added to every attempt, so that nodes
    /// started together do not all dial at once. Default 100 ms.
    pub jitter: Duration,
    /// How often the dialer also checks every kept peer on its own, in case a loss was not
    /// reported to it. Default 5 s (the original's `connectivity_check_interval_ms`).
    pub check_interval: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> ReconnectConfig {
        ReconnectConfig {
            initial_delay: Duration::from_secs(2),
            multiplier: 2,
            max_delay: Duration::from_secs(60),
            jitter: Duration::from_millis(100),
            check_interval: Duration::from_secs(5),
        }
    }
}

/// When the health checker pings and when it gives up on a peer. The defaults are the
/// original's (`ping_interval_ms` 10 000, `ping_timeout_ms` 20 000, `ping_failures_tolerated`
/// 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Time between two rounds of pings. Default 10 s.
    pub interval: Duration,
    /// How long one ping waits for its pong. Default 20 s. It may exceed `interval`: a peer
    /// is never pinged again while its previous ping is in flight, so failures are counted
    /// in order.
    pub timeout: Duration,
    /// Consecutive failed pings tolerated. One more closes the connection with
    /// `NetworkHealthCheckFailure` (as the original, whose test is `failures > tolerated`):
    /// with the default 3, the fourth consecutive failure disconnects. Default 3.
    pub failures_tolerated: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> HealthCheckConfig {
        HealthCheckConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
            failures_tolerated: 3,
        }
    }
}

impl NetworkConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidConfig`] naming the first zero timeout, interval, limit or chain
    /// id.
    pub fn validate(&self) -> Result<(), BuildError> {
        let mut durations = vec![
            ("dial_timeout", self.dial_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("reconnect.initial_delay", self.reconnect.initial_delay),
            ("reconnect.max_delay", self.reconnect.max_delay),
            ("reconnect.check_interval", self.reconnect.check_interval),
        ];
        if let Some(h) = &self.health_check {
            durations.push(("health_check.interval", h.interval));
            durations.push(("health_check.timeout", h.timeout));
        }
        for (field, value) in durations {
            if value.is_zero() {
                return Err(BuildError::InvalidConfig {
                    field,
                    reason: "must be longer than zero",
                });
            }
        }
        if self.chain_id.0 == 0 {
            // As the original's `ChainId::new`: 0 is reserved for "not set".
            return Err(BuildError::InvalidConfig {
                field: "chain_id",
                reason: "must not be zero",
            });
        }
        if self.reconnect.multiplier == 0 {
            return Err(BuildError::InvalidConfig {
                field: "reconnect.multiplier",
                reason: "must be at least 1",
            });
        }
        if self.max_pending_handshakes == 0 {
            return Err(BuildError::InvalidConfig {
                field: "max_pending_handshakes",
                reason: "must be at least 1",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals_and_valid() {
        let c = NetworkConfig::default();
        let h = c.health_check.clone().unwrap();
        assert_eq!(h.interval, Duration::from_secs(10));
        assert_eq!(h.timeout, Duration::from_secs(20));
        assert_eq!(h.failures_tolerated, 3);
        assert_eq!(c.chain_id, ChainId(4));
        assert_eq!(c.network_id, NetworkId::Public);
        let r = &c.reconnect;
        assert_eq!(r.initial_delay, Duration::from_secs(2));
        assert_eq!(r.multiplier, 2);
        assert_eq!(r.max_delay, Duration::from_secs(60));
        assert_eq!(r.jitter, Duration::from_millis(100));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_zero_durations() {
        let c = NetworkConfig {
            health_check: Some(HealthCheckConfig {
                interval: Duration::ZERO,
                ..Default::default()
            }),
            ..Default::default()
        };
        match c.validate() {
            Err(BuildError::InvalidConfig { field, .. }) => {
                assert_eq!(field, "health_check.interval")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
