//! Inline credentials are sealed at rest with XChaCha20-Poly1305 under a
//! 32-byte master key. The provider id (its hyphenated text, as in the
//! snapshot) is the associated data, so a sealed
//! secret cannot be moved to another provider's row.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};

const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("master key must be 32 bytes encoded as base64 (44 characters); got {0} bytes")]
    KeyLength(usize),
    #[error("master key is not valid base64")]
    KeyEncoding,
    #[error("sealed credential is malformed or was sealed with another master key")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// The master key. Debug never shows it.
#[derive(Clone)]
pub struct MasterKey(chacha20poly1305::Key);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(*****)")
    }
}

impl MasterKey {
    /// Parses a base64-encoded 32-byte key (surrounding whitespace ignored).
    pub fn from_base64(encoded: &str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| SealError::KeyEncoding)?;
        if bytes.len() != 32 {
            return Err(SealError::KeyLength(bytes.len()));
        }
        Ok(Self(*chacha20poly1305::Key::from_slice(&bytes)))
    }

    /// A 32-byte key for one `purpose`, derived from the master key
    /// (HMAC-SHA256 keyed by it), so one secret serves several uses
    /// without one use revealing another's key.
    pub fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(self.0.as_slice())
            .expect("HMAC takes keys of any length");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    /// The key's id: 8 hex characters derived from it (not from anything
    /// secret-revealing), so logs, `switchyard keygen` and signed
    /// snapshots can say which key is meant without showing it.
    pub fn id(&self) -> String {
        self.derive(b"switchyard key id v1")[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A fresh random key, base64-encoded (for `switchyard dev` and key generation).
    pub fn generate_base64() -> String {
        STANDARD.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// Seals `secret`, bound to `context` (the provider id). Output: nonce || ciphertext.
    pub fn seal(&self, context: &[u8], secret: &SecretString) -> Result<Vec<u8>, SealError> {
        let cipher = XChaCha20Poly1305::new(&self.0);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: context,
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`MasterKey::seal`] produced with the same context.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<SecretString, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(&self.0);
        let pt = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map_err(|_| SealError::Open)?;
        let s = String::from_utf8(pt).map_err(|_| SealError::Open)?;
        Ok(SecretString::from(s))
    }
}

/// The keys a server holds: the current one (seals, signs, hashes new
/// caller keys) and, during a rotation, the previous one (still opens,
/// verifies and matches what was made under it).
#[derive(Clone, Debug)]
pub struct MasterKeys {
    pub current: MasterKey,
    pub previous: Option<MasterKey>,
}

impl MasterKeys {
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Self {
        Self { current, previous }
    }

    /// The current key, then the previous one.
    pub fn all(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }

    /// The key whose id is `id`.
    pub fn by_id(&self, id: &str) -> Option<&MasterKey> {
        self.all().find(|k| k.id() == id)
    }

    /// Opens a sealed credential with whichever key sealed it.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<SecretString, SealError> {
        let mut last = SealError::Open;
        for k in self.all() {
            match k.open(context, sealed) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// What reads may show of a secret: its last four characters, and nothing
/// at all for secrets too short for that to be safe.
pub fn fingerprint(secret: &SecretString) -> String {
    let s = secret.expose_secret();
    let n = s.chars().count();
    if n < 12 {
        return "*****".to_owned();
    }
    let tail: String = s.chars().skip(n - 4).collect();
    format!("...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&MasterKey::generate_base64()).expect("generated key parses")
    }

    #[test]
    fn sealed_secret_round_trips_only_with_the_same_context() {
        let k = key();
        let secret = SecretString::from("sk-test-0123456789abcd");
        let sealed = k.seal(b"provider-a", &secret).expect("seal");
        assert!(
            !sealed.windows(4).any(|w| w == b"abcd"),
            "plaintext visible in ciphertext"
        );
        let opened = k.open(b"provider-a", &sealed).expect("open");
        assert_eq!(opened.expose_secret(), "sk-test-0123456789abcd");
        assert!(matches!(
            k.open(b"provider-b", &sealed),
            Err(SealError::Open)
        ));
        assert!(matches!(
            key().open(b"provider-a", &sealed),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn bad_master_keys_are_refused_with_a_reason() {
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(SealError::KeyEncoding)
        ));
        assert!(matches!(
            MasterKey::from_base64("c2hvcnQ="),
            Err(SealError::KeyLength(5))
        ));
        assert_eq!(format!("{:?}", key()), "MasterKey(*****)");
    }

    #[test]
    fn a_ring_opens_what_either_key_sealed_and_ids_tell_keys_apart() {
        let (old, new) = (key(), key());
        assert_eq!(old.id().len(), 8);
        assert_ne!(old.id(), new.id());
        assert_eq!(old.id(), old.clone().id());
        let secret = SecretString::from("sk-test-0123456789abcd");
        let sealed_old = old.seal(b"p", &secret).expect("seal");
        let ring = MasterKeys::new(new.clone(), Some(old.clone()));
        assert_eq!(
            ring.open(b"p", &sealed_old).expect("open").expose_secret(),
            "sk-test-0123456789abcd"
        );
        assert_eq!(ring.by_id(&old.id()).map(MasterKey::id), Some(old.id()));
        let alone = MasterKeys::new(new, None);
        assert!(alone.open(b"p", &sealed_old).is_err());
        assert!(alone.by_id(&old.id()).is_none());
    }

    #[test]
    fn fingerprint_shows_at_most_the_last_four_characters() {
        assert_eq!(
            fingerprint(&SecretString::from("sk-live-aaaaaaaaWXYZ")),
            "...WXYZ"
        );
        assert_eq!(fingerprint(&SecretString::from("short")), "*****");
    }
}
