//! Credentials, a provider's own and its keys' alike: how a write stores
//! one (an inline secret sealed with the master key, bound to the
//! provider's id, or a checked `env:` / `file:` reference) and what reads
//! show of it (source, fingerprint or reference, never the secret).

use secrecy::SecretString;
use switchyard_shared::seal::fingerprint;
use uuid::Uuid;

use super::{Store, pb};
use crate::entity::provider;
use crate::error::{ApiError, ApiResult};
use crate::validate;

pub(crate) fn credential_info(m: &provider::Model) -> pb::CredentialInfo {
    info_of(
        &m.credential_source,
        m.credential_fingerprint.as_ref(),
        m.credential_reference.as_ref(),
    )
}

/// What reads show of a stored credential (a provider's or one of its
/// keys'): its source, fingerprint or reference, never the secret.
pub(super) fn info_of(
    source: &str,
    fingerprint: Option<&String>,
    reference: Option<&String>,
) -> pb::CredentialInfo {
    use pb::credential_info::Source;
    let source = match source {
        "inline" => Source::Inline,
        "reference" => Source::Reference,
        _ => Source::None,
    };
    pb::CredentialInfo {
        source: source.into(),
        fingerprint: fingerprint.cloned().unwrap_or_default(),
        reference: reference.cloned().unwrap_or_default(),
    }
}

/// Sealed secret, reference and fingerprint for a credential input.
pub(super) struct StoredCredential {
    pub source: &'static str,
    pub sealed: Option<Vec<u8>>,
    pub reference: Option<String>,
    pub fingerprint: Option<String>,
}

impl Store {
    /// Seals an inline secret (bound to the provider's id, for its own
    /// credential and its keys alike) or checks a reference. `field` names
    /// the input in errors (`provider.credential`, `provider.keys[1].credential`).
    pub(super) fn store_credential(
        &self,
        field: &str,
        id: Uuid,
        input: Option<&pb::CredentialInput>,
    ) -> ApiResult<StoredCredential> {
        use pb::credential_input::Source;
        match input.and_then(|c| c.source.as_ref()) {
            None => Ok(StoredCredential {
                source: "none",
                sealed: None,
                reference: None,
                fingerprint: None,
            }),
            Some(Source::Inline(secret)) => {
                validate::inline_secret(&format!("{field}.inline"), secret)?;
                let secret = SecretString::from(secret.clone());
                let sealed = self
                    .master_key()?
                    .seal(id.to_string().as_bytes(), &secret)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                Ok(StoredCredential {
                    source: "inline",
                    sealed: Some(sealed),
                    reference: None,
                    fingerprint: Some(fingerprint(&secret)),
                })
            }
            Some(Source::Reference(r)) => {
                validate::credential_reference(
                    &format!("{field}.reference"),
                    r,
                    &self.credential_rules,
                )?;
                Ok(StoredCredential {
                    source: "reference",
                    sealed: None,
                    reference: Some(r.clone()),
                    fingerprint: None,
                })
            }
        }
    }
}
