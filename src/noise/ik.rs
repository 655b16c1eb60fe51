//! The generic Noise IK exchange (`Noise_IK_25519_AESGCM_SHA256`), run by snow: any prologue,
//! any payloads. This is the layer the Noise test vectors check; the Aptos rules (prologue
//! layout, timestamp, trust) sit above it in `handshake.rs`.
//!
//! ```text
//! IK:
//!   <- s                      (the initiator knows the responder's static key)
//!   ...
//!   -> e, es, s, ss           first message: e (32), encrypted s (48), encrypted payload (n + 16)
//!   <- e, ee, se              second message: e (32), encrypted payload (n + 16)
//! ```
//!
//! After the second message, snow's raw split hands over the two transport keys (initiator to
//! responder first) instead of a snow `TransportState`, whose two directions cannot be owned by
//! two threads (see `transport.rs`).

use snow::params::NoiseParams;
use snow::{Builder, HandshakeState};

use super::error::CryptoError;
use super::keys::KEY_LEN;

/// The only protocol spoken, as Aptos names it (`crates/aptos-crypto/src/noise.rs`).
pub const PROTOCOL_NAME: &str = "Noise_IK_25519_AESGCM_SHA256";

fn params() -> NoiseParams {
    PROTOCOL_NAME
        .parse()
        .expect("a constant protocol name that snow supports")
}

/// A fresh x25519 private key from the operating system's random source.
pub(crate) fn generate_keypair() -> Result<[u8; KEY_LEN], CryptoError> {
    let pair = Builder::new(params())
        .generate_keypair()
        .map_err(CryptoError)?;
    let mut private = [0u8; KEY_LEN];
    private.copy_from_slice(&pair.private);
    Ok(private)
}

/// What a finished handshake leaves: one AES-256-GCM key per direction, and the handshake
/// hash (checked against the test vectors).
pub(crate) struct Split {
    pub(crate) send: [u8; KEY_LEN],
    pub(crate) recv: [u8; KEY_LEN],
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) handshake_hash: [u8; 32],
}

fn split(mut state: HandshakeState, initiator: bool) -> Split {
    let (initiator_to_responder, responder_to_initiator) = state.dangerously_get_raw_split();
    let mut handshake_hash = [0u8; 32];
    handshake_hash.copy_from_slice(state.get_handshake_hash());
    let (send, recv) = if initiator {
        (initiator_to_responder, responder_to_initiator)
    } else {
        (responder_to_initiator, initiator_to_responder)
    };
    Split {
        send,
        recv,
        handshake_hash,
    }
}

fn builder<'a>(
    local_private: &'a [u8; KEY_LEN],
    prologue: &'a [u8],
    ephemeral: Option<&'a [u8; KEY_LEN]>,
) -> Result<Builder<'a>, snow::Error> {
    let mut b = Builder::new(params())
        .local_private_key(local_private)?
        .prologue(prologue)?;
    if let Some(e) = ephemeral {
        // Only the test vectors fix the ephemeral key; a handshake always draws a fresh one.
        b = b.fixed_ephemeral_key_for_testing_only(e);
    }
    Ok(b)
}

/// The initiator between its first message and the responder's answer.
pub(crate) struct IkInitiator(HandshakeState);

impl IkInitiator {
    /// Writes the first message (`-> e, es, s, ss` with `payload`) into `out`, returning its
    /// length (`96 + payload.len()`; `out` must hold it).
    pub(crate) fn start(
        local_private: &[u8; KEY_LEN],
        remote_public: &[u8; KEY_LEN],
        prologue: &[u8],
        payload: &[u8],
        ephemeral: Option<&[u8; KEY_LEN]>,
        out: &mut [u8],
    ) -> Result<(IkInitiator, usize), snow::Error> {
        let mut state = builder(local_private, prologue, ephemeral)?
            .remote_public_key(remote_public)?
            .build_initiator()?;
        let len = state.write_message(payload, out)?;
        Ok((IkInitiator(state), len))
    }

    /// Reads the responder's message (`<- e, ee, se`), writing its payload into `payload`
    /// (which must hold `message.len() - 48` bytes). `Error::Decrypt` if it does not
    /// authenticate.
    pub(crate) fn finish(
        mut self,
        message: &[u8],
        payload: &mut [u8],
    ) -> Result<(usize, Split), snow::Error> {
        let len = self.0.read_message(message, payload)?;
        Ok((len, split(self.0, true)))
    }
}

/// The responder between the initiator's message and its answer.
pub(crate) struct IkResponder(HandshakeState);

impl IkResponder {
    /// Reads the initiator's first message, writing its payload into `payload` (which must
    /// hold `message.len() - 96` bytes); returns the initiator's static key and the payload's
    /// length. `Error::Decrypt` if it does not authenticate.
    pub(crate) fn read(
        local_private: &[u8; KEY_LEN],
        prologue: &[u8],
        message: &[u8],
        ephemeral: Option<&[u8; KEY_LEN]>,
        payload: &mut [u8],
    ) -> Result<(IkResponder, [u8; KEY_LEN], usize), snow::Error> {
        let mut state = builder(local_private, prologue, ephemeral)?.build_responder()?;
        let len = state.read_message(message, payload)?;
        let mut remote = [0u8; KEY_LEN];
        remote.copy_from_slice(
            state
                .get_remote_static()
                .expect("IK's first message carries the initiator's static key"),
        );
        Ok((IkResponder(state), remote, len))
    }

    /// Writes the answer (`<- e, ee, se` with `payload`) into `out`, returning its length
    /// (`48 + payload.len()`).
    pub(crate) fn answer(
        mut self,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, Split), snow::Error> {
        let len = self.0.write_message(payload, out)?;
        Ok((len, split(self.0, false)))
    }
}
