//! Parsing a [`PeerId`] from text (`FromStr`), for ids in configuration files and command
//! lines: the full 64 hex digits, as `{:?}` prints them inside `PeerId(…)`, with an optional
//! `0x`. The short `Display` form (8 digits) is not an id and is refused.
//!
//! This impl belongs next to `PeerId` in `peer/mod.rs`; it lives here while that module is
//! being rewritten, and moves there unchanged.

use std::fmt;
use std::str::FromStr;

use crate::peer::PeerId;

/// Why a string is not a [`PeerId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParsePeerIdError {
    /// Not 64 hex digits (the length found, after any `0x`).
    Length(usize),
    /// A character that is not a hex digit, at this byte offset (after any `0x`).
    NotHex(usize),
}

impl fmt::Display for ParsePeerIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParsePeerIdError::Length(n) => {
                write!(f, "a peer id is 64 hex digits, found {n} characters")
            }
            ParsePeerIdError::NotHex(at) => write!(f, "not a hex digit at offset {at}"),
        }
    }
}

impl std::error::Error for ParsePeerIdError {}

impl FromStr for PeerId {
    type Err = ParsePeerIdError;

    /// Parses 64 hex digits (either case), optionally after `0x`.
    fn from_str(s: &str) -> Result<PeerId, ParsePeerIdError> {
        let digits = s.strip_prefix("0x").unwrap_or(s).as_bytes();
        if digits.len() != 64 {
            return Err(ParsePeerIdError::Length(digits.len()));
        }
        let nibble = |at: usize| match digits[at] {
            b @ b'0'..=b'9' => Ok(b - b'0'),
            b @ b'a'..=b'f' => Ok(b - b'a' + 10),
            b @ b'A'..=b'F' => Ok(b - b'A' + 10),
            _ => Err(ParsePeerIdError::NotHex(at)),
        };
        let mut id = [0u8; 32];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = nibble(2 * i)? << 4 | nibble(2 * i + 1)?;
        }
        Ok(PeerId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_debug_prints() {
        for id in [PeerId::from_u64(7), PeerId([0xab; 32]), PeerId::default()] {
            let debug = format!("{id:?}");
            let hex = &debug["PeerId(".len()..debug.len() - 1];
            assert_eq!(hex.parse::<PeerId>(), Ok(id));
            assert_eq!(
                format!("0x{}", hex.to_uppercase()).parse::<PeerId>(),
                Ok(id)
            );
        }
    }

    #[test]
    fn refuses_the_short_form_and_non_hex() {
        assert_eq!(
            "00000007".parse::<PeerId>(),
            Err(ParsePeerIdError::Length(8))
        );
        let mut bad = "0".repeat(64);
        bad.replace_range(10..11, "g");
        assert_eq!(bad.parse::<PeerId>(), Err(ParsePeerIdError::NotHex(10)));
        assert_eq!(
            ParsePeerIdError::NotHex(10).to_string(),
            "not a hex digit at offset 10"
        );
    }
}
