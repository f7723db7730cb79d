//! Targets: a provider's keys, and the runtime targets a member turns into.
//!
//! A provider without named keys has one key, "default" (its `credential`),
//! and each member is one target with the member's own id, as before keys
//! existed. A provider with named keys turns each member into one target per
//! key, `member~key`: each its own health, bench, limits, headroom and
//! in-flight count, so one exhausted key does not bench the others. A member
//! with `key` set uses only that key (docs/adr/005-live-signals.md, "Several
//! keys per provider").

use std::sync::Arc;

use secrecy::SecretString;
use switchyard_proto::v1 as pb;

use crate::credentials::{self, Refusal, Resolver};
use crate::upstream::{Endpoint, Kind, Target, Timeouts, Wire};

/// The name of a provider's own `credential` as a key.
pub const DEFAULT_KEY: &str = "default";

/// Joins a member (or direct) id and a key name into a target id.
pub const SEPARATOR: char = '~';

/// One key of a provider, resolved, with the URLs and headers its members'
/// requests are sent with (built here, once per config load).
pub struct Key {
    pub name: String,
    pub credential: Option<SecretString>,
    wire: Arc<Wire>,
}

/// A provider as a worker serves it.
pub struct Provider {
    pub name: String,
    pub kind: Kind,
    pub base_url: String,
    /// Keys served, "default" first when there is one.
    pub keys: Vec<Key>,
    /// Keys refused (their credential cannot be served), and why.
    pub refused_keys: Vec<(String, Refusal)>,
    /// The provider has named keys: its targets' ids carry the key name.
    pub keyed: bool,
    pub headers: Vec<(String, String)>,
    pub timeouts: Timeouts,
    pub enabled: bool,
}

fn ms(v: u32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(v))
}

fn kind(k: i32) -> Result<Kind, Refusal> {
    match pb::ProviderKind::try_from(k) {
        Ok(pb::ProviderKind::Openai) => Ok(Kind::OpenAi),
        Ok(pb::ProviderKind::Anthropic) => Ok(Kind::Anthropic),
        Ok(pb::ProviderKind::Mock) => Ok(Kind::Mock),
        Ok(pb::ProviderKind::Unspecified) | Err(_) => Err(Refusal::UnknownKind(k)),
    }
}

/// What a member is served as: one target per key it uses, or why a key
/// is not served.
pub enum Expanded<'p> {
    Served {
        id: String,
        key: &'p Key,
    },
    Refused {
        id: String,
        key: String,
        reason: Refusal,
    },
}

impl Provider {
    /// Builds the provider, every key's credential resolved once. Refused
    /// as a whole when its kind is unknown, or when no key can be served
    /// (the reason: the first key's).
    pub fn build(p: &pb::SnapshotProvider, resolver: &Resolver) -> Result<Self, Refusal> {
        let kind = kind(p.kind)?;
        let keyed = !p.keys.is_empty();
        let headers: Vec<(String, String)> = p
            .extra_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = |name: String, credential: Option<SecretString>| {
            let wire = Wire::new(kind, &p.base_url, credential.as_ref(), &headers);
            Key {
                name,
                credential,
                wire: Arc::new(wire),
            }
        };
        let mut keys = Vec::new();
        let mut refused_keys = Vec::new();
        // Without named keys, "default" is the provider's credential, set
        // or not (some upstreams need none). With them, it is a key only
        // when a credential is configured.
        if !keyed || credentials::configured(p.credential.as_ref()) {
            match resolver.credential(p) {
                Ok(credential) => keys.push(key(DEFAULT_KEY.to_owned(), credential)),
                Err(reason) => refused_keys.push((DEFAULT_KEY.to_owned(), reason)),
            }
        }
        for k in &p.keys {
            match resolver.key(p, k) {
                Ok(credential) => keys.push(key(k.name.clone(), credential)),
                Err(reason) => refused_keys.push((k.name.clone(), reason)),
            }
        }
        if keys.is_empty()
            && let Some((_, reason)) = refused_keys.first()
        {
            return Err(reason.clone());
        }
        for (key, reason) in &refused_keys {
            tracing::warn!(
                provider = %p.name,
                key = %key,
                reason = reason.label(),
                "provider key refused: its targets are not served: {reason}"
            );
        }
        let t = p.timeouts.unwrap_or_default();
        Ok(Self {
            name: p.name.clone(),
            kind,
            base_url: p.base_url.clone(),
            keys,
            refused_keys,
            keyed,
            headers,
            timeouts: Timeouts {
                connect: ms(t.connect_ms.max(1)),
                first_byte: ms(t.first_byte_ms.max(1)),
                total: ms(t.request_ms.max(1)),
            },
            enabled: p.enabled,
        })
    }

    /// The id of `base`'s target on `key`: `base` itself when the provider
    /// has no named keys, else `base~key`.
    pub fn target_id(&self, base: &str, key: &str) -> String {
        if self.keyed {
            format!("{base}{SEPARATOR}{key}")
        } else {
            base.to_owned()
        }
    }

    /// The targets of member `id`, which uses `pinned` (empty: every key).
    pub fn expand<'p>(&'p self, id: &str, pinned: &str) -> Vec<Expanded<'p>> {
        let served = |k: &'p Key| Expanded::Served {
            id: self.target_id(id, &k.name),
            key: k,
        };
        let refused = |name: &str, reason: Refusal| Expanded::Refused {
            id: self.target_id(id, name),
            key: name.to_owned(),
            reason,
        };
        if pinned.is_empty() {
            let mut out: Vec<Expanded<'p>> = self.keys.iter().map(served).collect();
            out.extend(
                self.refused_keys
                    .iter()
                    .map(|(name, reason)| refused(name, reason.clone())),
            );
            return out;
        }
        if let Some(k) = self.keys.iter().find(|k| k.name == pinned) {
            return vec![served(k)];
        }
        let reason = self
            .refused_keys
            .iter()
            .find(|(name, _)| name == pinned)
            .map_or_else(
                || Refusal::UnknownKey(pinned.to_owned()),
                |(_, r)| r.clone(),
            );
        vec![refused(pinned, reason)]
    }

    /// Where a call to `model` with `key` goes. `default_max_tokens` is the
    /// member's `max_output_tokens`; `allow_extra` the pool's
    /// `allow_request_extra` (a direct `provider/model` call has no pool:
    /// None and true).
    pub fn target(
        &self,
        model: &str,
        key: &Key,
        default_max_tokens: Option<u32>,
        allow_extra: bool,
    ) -> Endpoint {
        let target = Target {
            kind: self.kind,
            base_url: self.base_url.clone(),
            model: model.to_owned(),
            credential: key.credential.clone(),
            extra_headers: self.headers.clone(),
            timeouts: self.timeouts,
            default_max_tokens,
            allow_extra,
        };
        Endpoint::with_wire(target, Arc::clone(&key.wire))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    struct Env;
    impl credentials::Secrets for Env {
        fn env(&self, name: &str) -> Option<String> {
            name.strip_prefix("SWITCHYARD_CRED_")
                .filter(|n| !n.starts_with("UNSET"))
                .map(|n| format!("sk-{}", n.to_lowercase()))
        }
        fn file(
            &self,
            _: &std::path::Path,
            _: &std::path::Path,
        ) -> Result<Option<String>, Refusal> {
            Ok(None)
        }
    }

    fn resolver() -> Resolver {
        Resolver {
            keys: None,
            rules: switchyard_shared::credential_ref::ReferenceRules::default(),
            secrets: Box::new(Env),
        }
    }

    fn cred(var: &str) -> Option<pb::SnapshotCredential> {
        Some(pb::SnapshotCredential {
            info: Some(pb::CredentialInfo {
                source: pb::credential_info::Source::Reference.into(),
                reference: format!("env:SWITCHYARD_CRED_{var}"),
                ..Default::default()
            }),
            sealed: Vec::new(),
        })
    }

    fn provider(default: Option<&str>, keys: &[(&str, &str)]) -> pb::SnapshotProvider {
        pb::SnapshotProvider {
            id: "prov-id".into(),
            name: "prov".into(),
            kind: pb::ProviderKind::Openai.into(),
            enabled: true,
            credential: default.and_then(cred),
            keys: keys
                .iter()
                .map(|(name, var)| pb::SnapshotProviderKey {
                    name: (*name).into(),
                    credential: cred(var),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// (target id, key, secret) of what member `m` pinned to `pinned` serves
    /// as, refused targets as (id, key, reason label).
    fn expand(p: &Provider, pinned: &str) -> Vec<(String, String, String)> {
        p.expand("m", pinned)
            .into_iter()
            .map(|e| match e {
                Expanded::Served { id, key } => (
                    id,
                    key.name.clone(),
                    key.credential
                        .as_ref()
                        .map(|s| s.expose_secret().to_owned())
                        .unwrap_or_default(),
                ),
                Expanded::Refused { id, key, reason } => (id, key, reason.label().to_owned()),
            })
            .collect()
    }

    fn t(id: &str, key: &str, v: &str) -> (String, String, String) {
        (id.into(), key.into(), v.into())
    }

    #[test]
    fn a_provider_without_keys_is_one_target_per_member_with_the_members_id() {
        let p = Provider::build(&provider(Some("A"), &[]), &resolver()).expect("served");
        assert_eq!(expand(&p, ""), [t("m", "default", "sk-a")]);
        assert_eq!(expand(&p, "default"), [t("m", "default", "sk-a")]);
        // No credential at all (an upstream that needs none) is still served.
        let p = Provider::build(&provider(None, &[]), &resolver()).expect("served");
        assert_eq!(expand(&p, ""), [t("m", "default", "")]);
    }

    #[test]
    fn a_member_expands_to_one_target_per_key_unless_it_names_one() {
        let p = Provider::build(
            &provider(Some("A"), &[("k1", "ONE"), ("k2", "TWO")]),
            &resolver(),
        )
        .expect("served");
        assert_eq!(
            expand(&p, ""),
            [
                t("m~default", "default", "sk-a"),
                t("m~k1", "k1", "sk-one"),
                t("m~k2", "k2", "sk-two"),
            ]
        );
        assert_eq!(expand(&p, "k2"), [t("m~k2", "k2", "sk-two")]);
        assert_eq!(expand(&p, "nope"), [t("m~nope", "nope", "unknown_key")]);
        // Named keys without a default credential: only the named ones.
        let p = Provider::build(&provider(None, &[("k1", "ONE")]), &resolver()).expect("served");
        assert_eq!(expand(&p, ""), [t("m~k1", "k1", "sk-one")]);
    }

    #[test]
    fn a_refused_key_refuses_its_targets_only_and_all_refused_refuses_the_provider() {
        let p = Provider::build(
            &provider(None, &[("k1", "ONE"), ("bad", "UNSET_X")]),
            &resolver(),
        )
        .expect("one key is enough");
        assert_eq!(
            expand(&p, ""),
            [
                t("m~k1", "k1", "sk-one"),
                t("m~bad", "bad", "unresolved_reference"),
            ]
        );
        assert_eq!(
            expand(&p, "bad"),
            [t("m~bad", "bad", "unresolved_reference")]
        );
        let err = Provider::build(&provider(None, &[("bad", "UNSET_X")]), &resolver())
            .err()
            .expect("refused");
        assert_eq!(err.label(), "unresolved_reference");
    }
}
