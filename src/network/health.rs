//! Health checks, sans-IO: the ping and pong messages on the reserved protocol and the
//! per-connection record of consecutive failures. The monitor thread (`monitor.rs`) sends the
//! pings, answers the remote's, and acts on the verdicts.
//!
//! The messages are the original's `HealthCheckerMsg` in BCS, so the bytes match:
//! `Ping(nonce)` is `00` ‖ nonce (u32 little-endian), `Pong(nonce)` is `01` ‖ nonce.
//!
//! Departures from the original, both deliberate: a peer is not pinged again while its
//! previous ping is in flight, so outcomes arrive in order and a late success cannot wipe out
//! newer failures (the original, whose timeout exceeds its interval, processes them out of
//! order); and answering the remote's pings does not reset our count of its failures (the
//! original does, so a peer that pings but never answers was never disconnected).

use bytes::Bytes;

use crate::proto::ProtocolId;

/// The protocol reserved for health checks: the original's `HealthCheckerRpc`.
pub const HEALTH_CHECK_PROTOCOL: ProtocolId = ProtocolId(5);

/// A health-check message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HealthMsg {
    Ping(u32),
    Pong(u32),
}

impl HealthMsg {
    pub(crate) fn encode(self) -> Bytes {
        let (tag, nonce) = match self {
            HealthMsg::Ping(n) => (0u8, n),
            HealthMsg::Pong(n) => (1u8, n),
        };
        let mut out = Vec::with_capacity(5);
        out.push(tag);
        out.extend_from_slice(&nonce.to_le_bytes());
        Bytes::from(out)
    }

    pub(crate) fn decode(data: &[u8]) -> Option<HealthMsg> {
        let (&tag, rest) = data.split_first()?;
        let nonce = u32::from_le_bytes(rest.try_into().ok()?);
        match tag {
            0 => Some(HealthMsg::Ping(nonce)),
            1 => Some(HealthMsg::Pong(nonce)),
            _ => None,
        }
    }
}

/// What a ping outcome means for the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Healthy,
    /// This many consecutive failures, still tolerated.
    Failing(u32),
    /// One failure more than tolerated: close the connection.
    Unhealthy,
}

/// One connection's health record.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failures: u32,
}

impl Health {
    /// Records one ping outcome.
    pub(crate) fn record(&mut self, ok: bool, tolerated: u32) -> Verdict {
        if ok {
            self.failures = 0;
            return Verdict::Healthy;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures > tolerated {
            Verdict::Unhealthy
        } else {
            Verdict::Failing(self.failures)
        }
    }
}

/// Nonces for pings: splitmix64 over a counter, seeded per network. Not secret, only varied.
#[derive(Debug)]
pub(crate) struct Nonces(u64);

impl Nonces {
    pub(crate) fn new(seed: u64) -> Nonces {
        Nonces(seed)
    }

    pub(crate) fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_the_originals_bcs() {
        assert_eq!(&HealthMsg::Ping(1).encode()[..], [0, 1, 0, 0, 0]);
        assert_eq!(&HealthMsg::Pong(0x0403_0201).encode()[..], [1, 1, 2, 3, 4]);
        assert_eq!(
            HealthMsg::decode(&[1, 1, 2, 3, 4]),
            Some(HealthMsg::Pong(0x0403_0201))
        );
        for bad in [
            &[][..],
            &[0, 1, 2, 3],
            &[2, 0, 0, 0, 0],
            &[0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(HealthMsg::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn disconnects_one_failure_past_the_tolerance() {
        let mut h = Health::default();
        assert_eq!(h.record(false, 2), Verdict::Failing(1));
        assert_eq!(h.record(false, 2), Verdict::Failing(2));
        assert_eq!(h.record(true, 2), Verdict::Healthy);
        assert_eq!(h.record(false, 2), Verdict::Failing(1));
        assert_eq!(h.record(false, 2), Verdict::Failing(2));
        assert_eq!(h.record(false, 2), Verdict::Unhealthy);
    }

    #[test]
    fn nonces_vary() {
        let mut n = Nonces::new(1);
        let a = n.next();
        assert_ne!(a, n.next());
    }
}
