//! The config snapshot as stored in Redis, signed: whoever can write Redis
//! must not be able to point a worker's providers (and their credentials)
//! somewhere else. The control plane signs with HMAC-SHA256 under a key
//! derived from the master key; workers verify before decoding.
//!
//! Stored form: `SYSIG1` · key id (8 ASCII hex) · MAC (32 bytes) · the
//! protobuf `Snapshot`. The MAC covers the Redis prefix too, so a snapshot
//! cannot be moved between deployments that share a master key. A raw
//! protobuf (no magic) is an unsigned snapshot, as control planes without a
//! master key (and older ones) write.

use hmac::Mac as _;

use crate::seal::{MasterKey, MasterKeys};

const MAGIC: &[u8] = b"SYSIG1";
const ID_LEN: usize = 8;
const MAC_LEN: usize = 32;
const HEADER: usize = MAGIC.len() + ID_LEN + MAC_LEN;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a stored snapshot is not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error(
        "the snapshot is not signed, and this worker has a master key: the control plane must run with the same master key"
    )]
    Unsigned,
    #[error(
        "the snapshot is signed with a master key this worker does not hold (neither --master-key nor --previous-master-key)"
    )]
    UnknownKey,
    #[error(
        "the snapshot's signature does not verify: it was changed after the control plane signed it"
    )]
    BadSignature,
}

impl Rejected {
    /// A short, fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
        }
    }
}

fn mac(key: &MasterKey, prefix: &str, payload: &[u8]) -> HmacSha256 {
    let derived = key.derive(b"switchyard config snapshot v1");
    let mut mac = HmacSha256::new_from_slice(&derived).expect("HMAC takes keys of any length");
    // Length-prefixed, so prefix and payload cannot trade bytes.
    mac.update(
        &u64::try_from(prefix.len())
            .unwrap_or(u64::MAX)
            .to_be_bytes(),
    );
    mac.update(prefix.as_bytes());
    mac.update(payload);
    mac
}

/// The stored form of `payload` (an encoded snapshot) under `prefix`.
pub fn sign(key: &MasterKey, prefix: &str, payload: &[u8]) -> Vec<u8> {
    let tag = mac(key, prefix, payload).finalize().into_bytes();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(key.id().as_bytes());
    out.extend_from_slice(&tag);
    out.extend_from_slice(payload);
    out
}

/// The snapshot bytes inside `stored`, once verified. Without keys nothing
/// can be verified: signed and unsigned snapshots are both taken (the
/// worker warns at start that its config is not authenticated).
pub fn verify<'a>(
    keys: Option<&MasterKeys>,
    prefix: &str,
    stored: &'a [u8],
) -> Result<&'a [u8], Rejected> {
    let signed = stored.len() >= HEADER && stored.starts_with(MAGIC);
    let Some(keys) = keys else {
        return Ok(if signed { &stored[HEADER..] } else { stored });
    };
    if !signed {
        return Err(Rejected::Unsigned);
    }
    let (id, rest) = stored[MAGIC.len()..].split_at(ID_LEN);
    let (tag, payload) = rest.split_at(MAC_LEN);
    let id = std::str::from_utf8(id).map_err(|_| Rejected::UnknownKey)?;
    let key = keys.by_id(id).ok_or(Rejected::UnknownKey)?;
    mac(key, prefix, payload)
        .verify_slice(tag)
        .map_err(|_| Rejected::BadSignature)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&MasterKey::generate_base64()).expect("key")
    }

    #[test]
    fn a_signed_snapshot_verifies_under_its_key_and_prefix_only() {
        let (k, other) = (key(), key());
        let ring = MasterKeys::new(k.clone(), None);
        let stored = sign(&k, "prod", b"snapshot bytes");
        assert_eq!(
            verify(Some(&ring), "prod", &stored),
            Ok(&b"snapshot bytes"[..])
        );
        assert_eq!(
            verify(Some(&ring), "staging", &stored),
            Err(Rejected::BadSignature)
        );
        let mut tampered = stored.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            verify(Some(&ring), "prod", &tampered),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify(Some(&ring), "prod", b"raw protobuf"),
            Err(Rejected::Unsigned)
        );
        assert_eq!(
            verify(Some(&ring), "prod", &sign(&other, "prod", b"x")),
            Err(Rejected::UnknownKey)
        );
        // A worker without keys cannot check; it takes either form.
        assert_eq!(verify(None, "prod", &stored), Ok(&b"snapshot bytes"[..]));
        assert_eq!(verify(None, "prod", b"raw"), Ok(&b"raw"[..]));
    }

    #[test]
    fn during_a_rotation_both_keys_verify() {
        let (old, new) = (key(), key());
        let ring = MasterKeys::new(new.clone(), Some(old.clone()));
        assert!(verify(Some(&ring), "p", &sign(&old, "p", b"a")).is_ok());
        assert!(verify(Some(&ring), "p", &sign(&new, "p", b"a")).is_ok());
        let after = MasterKeys::new(new, None);
        assert_eq!(
            verify(Some(&after), "p", &sign(&old, "p", b"a")),
            Err(Rejected::UnknownKey)
        );
    }
}
