//! Snapshots built the way the control plane resolves them, published the
//! way it publishes them (snapshot and revision keys, then a change message).
#![allow(dead_code, unused_imports)]

use std::time::Duration;

use prost::Message as _;
use secrecy::SecretString;
use switchyard_proto::v1 as pb;
use switchyard_shared::change::{Action, ChangeMessage, Resource};
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::{Redis, RedisConfig, Timeouts};
use switchyard_shared::seal::MasterKey;
use switchyard_shared::signed_snapshot;
use switchyard_testkit::harness::RedisPrefix;

pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Builds snapshots the way the control plane resolves them.
#[derive(Default, Clone)]
pub struct Config {
    pub snap: pb::Snapshot,
}

pub fn policy(retries: u32, threshold: u32, cooldown_ms: u32) -> pb::FailoverPolicy {
    pb::FailoverPolicy {
        transient_retries: retries,
        failure_threshold: threshold,
        cooldown_base_ms: cooldown_ms,
        cooldown_max_ms: cooldown_ms * 8,
        advance_on_permanent: false,
    }
}

impl Config {
    /// The shape most tests need: provider "up" (OpenAI wire format, no
    /// credential) at `base_url` and one pool "p" of `members`
    /// (provider, upstream model, priority).
    pub fn one_pool(
        base_url: &str,
        strategy: pb::Strategy,
        failover: pb::FailoverPolicy,
        members: &[(&str, &str, i32)],
    ) -> Self {
        let mut config = Self::default();
        config
            .provider("up", pb::ProviderKind::Openai, base_url, None)
            .pool("p", strategy, failover, members);
        config
    }

    /// An upstream provider; `secret` is sealed like an inline credential.
    pub fn provider(
        &mut self,
        name: &str,
        kind: pb::ProviderKind,
        base_url: &str,
        secret: Option<&str>,
    ) -> &mut Self {
        let id = uuid::Uuid::new_v4().to_string();
        let credential = secret.map(|s| {
            let key = MasterKey::from_base64(MASTER_KEY).expect("key");
            pb::SnapshotCredential {
                info: Some(pb::CredentialInfo {
                    source: pb::credential_info::Source::Inline.into(),
                    ..Default::default()
                }),
                sealed: key
                    .seal(id.as_bytes(), &SecretString::from(s.to_owned()))
                    .expect("seal"),
            }
        });
        self.snap.providers.push(pb::SnapshotProvider {
            id,
            name: name.into(),
            kind: kind.into(),
            base_url: base_url.into(),
            credential,
            extra_headers: Default::default(),
            timeouts: Some(pb::Timeouts {
                connect_ms: 1000,
                first_byte_ms: 3000,
                request_ms: 10_000,
            }),
            enabled: true,
            keys: Vec::new(),
        });
        self
    }

    /// Named keys of provider `name` (beside its own credential, "default"),
    /// each sealed the way the control plane seals a named key (bound to
    /// the provider's id).
    pub fn provider_keys(&mut self, name: &str, keys: &[(&str, &str)]) -> &mut Self {
        let master = MasterKey::from_base64(MASTER_KEY).expect("key");
        for p in self.snap.providers.iter_mut().filter(|p| p.name == name) {
            p.keys = keys
                .iter()
                .map(|(key, secret)| pb::SnapshotProviderKey {
                    name: (*key).into(),
                    credential: Some(pb::SnapshotCredential {
                        info: Some(pb::CredentialInfo {
                            source: pb::credential_info::Source::Inline.into(),
                            ..Default::default()
                        }),
                        sealed: master
                            .seal(p.id.as_bytes(), &SecretString::from((*secret).to_owned()))
                            .expect("seal"),
                    }),
                })
                .collect();
        }
        self
    }

    pub fn provider_reference(&mut self, name: &str, base_url: &str, reference: &str) -> &mut Self {
        self.provider(name, pb::ProviderKind::Openai, base_url, None);
        if let Some(p) = self.snap.providers.last_mut() {
            p.credential = Some(pb::SnapshotCredential {
                info: Some(pb::CredentialInfo {
                    source: pb::credential_info::Source::Reference.into(),
                    reference: reference.into(),
                    ..Default::default()
                }),
                sealed: Vec::new(),
            });
        }
        self
    }

    fn provider_id(&self, name: &str) -> String {
        self.snap
            .providers
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.id.clone())
            .expect("provider exists")
    }

    /// A pool; members are (provider, model, priority). Member ids are `<pool>-<model>`.
    pub fn pool(
        &mut self,
        name: &str,
        strategy: pb::Strategy,
        failover: pb::FailoverPolicy,
        members: &[(&str, &str, i32)],
    ) -> &mut Self {
        let members = members
            .iter()
            .map(|(prov, model, priority)| pb::SnapshotMember {
                id: format!("{name}-{model}"),
                provider_id: self.provider_id(prov),
                provider_name: (*prov).into(),
                upstream_model: (*model).into(),
                weight: 1,
                priority: *priority,
                status: pb::MemberStatus::Active.into(),
                rpm_limit: None,
                tpm_limit: None,
                max_output_tokens: None,
                ..Default::default()
            })
            .collect();
        self.snap.pools.push(pb::SnapshotPool {
            id: format!("pool-{name}-{}", uuid::Uuid::new_v4().simple()),
            name: name.into(),
            strategy: strategy.into(),
            failover: Some(failover),
            enabled: true,
            members,
            allow_request_extra: None,
        });
        self
    }

    pub fn member_status(
        &mut self,
        pool: &str,
        model: &str,
        status: pb::MemberStatus,
    ) -> &mut Self {
        for p in self.snap.pools.iter_mut().filter(|p| p.name == pool) {
            for m in p.members.iter_mut().filter(|m| m.upstream_model == model) {
                m.status = status.into();
            }
        }
        self
    }

    pub fn member_limits(
        &mut self,
        pool: &str,
        model: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> &mut Self {
        for p in self.snap.pools.iter_mut().filter(|p| p.name == pool) {
            for m in p.members.iter_mut().filter(|m| m.upstream_model == model) {
                m.rpm_limit = rpm;
                m.tpm_limit = tpm;
            }
        }
        self
    }

    /// A member that uses only provider key `key`.
    pub fn member_key(&mut self, pool: &str, model: &str, key: &str) -> &mut Self {
        for p in self.snap.pools.iter_mut().filter(|p| p.name == pool) {
            for m in p.members.iter_mut().filter(|m| m.upstream_model == model) {
                m.key = key.into();
            }
        }
        self
    }

    /// A member's context window, tokens.
    pub fn member_context(&mut self, pool: &str, model: &str, tokens: u64) -> &mut Self {
        for p in self.snap.pools.iter_mut().filter(|p| p.name == pool) {
            for m in p.members.iter_mut().filter(|m| m.upstream_model == model) {
                m.context_tokens = Some(tokens);
            }
        }
        self
    }

    /// A member's `max_concurrency` (requests in flight at once, fleet-wide).
    pub fn member_max_concurrency(&mut self, pool: &str, model: &str, n: u32) -> &mut Self {
        for p in self.snap.pools.iter_mut().filter(|p| p.name == pool) {
            for m in p.members.iter_mut().filter(|m| m.upstream_model == model) {
                m.max_concurrency = Some(n);
            }
        }
        self
    }

    /// A member's `max_output_tokens` (max_tokens when a request sets none).
    pub fn member_max_output(&mut self, pool: &str, model: &str, n: u32) -> &mut Self {
        for p in self.snap.pools.iter_mut().filter(|p| p.name == pool) {
            for m in p.members.iter_mut().filter(|m| m.upstream_model == model) {
                m.max_output_tokens = Some(n);
            }
        }
        self
    }

    /// Whether a pool's callers may send `extra_json`.
    pub fn pool_allows_extra(&mut self, pool: &str, allow: bool) -> &mut Self {
        for p in self.snap.pools.iter_mut().filter(|p| p.name == pool) {
            p.allow_request_extra = Some(allow);
        }
        self
    }

    pub fn route(&mut self, name: &str, tiers: &[(&str, bool)]) -> &mut Self {
        self.snap.routes.push(pb::SnapshotRoute {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            tiers: tiers
                .iter()
                .map(|(pool, backup)| pb::RouteTier {
                    target: Some(pb::route_tier::Target::Pool((*pool).into())),
                    backup: *backup,
                    when: None,
                })
                .collect(),
            enabled: true,
        });
        self
    }

    /// A route whose tiers may ask something of the request:
    /// (pool, backup, condition).
    pub fn route_when(
        &mut self,
        name: &str,
        tiers: &[(&str, bool, Option<pb::TierCondition>)],
    ) -> &mut Self {
        self.snap.routes.push(pb::SnapshotRoute {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            tiers: tiers
                .iter()
                .map(|(pool, backup, when)| pb::RouteTier {
                    target: Some(pb::route_tier::Target::Pool((*pool).into())),
                    backup: *backup,
                    when: *when,
                })
                .collect(),
            enabled: true,
        });
        self
    }

    /// Stores the snapshot at `revision` and (when `notify`) publishes the change.
    pub async fn publish(
        &mut self,
        redis: &str,
        prefix: &RedisPrefix,
        revision: u64,
        notify: bool,
    ) {
        let cfg = RedisConfig {
            url: redis.to_owned(),
            ..RedisConfig::default()
        };
        self.publish_to(&cfg, prefix, revision, notify).await;
    }

    /// As `publish`, to any Redis (a cluster, TLS).
    pub async fn publish_to(
        &mut self,
        redis: &RedisConfig,
        prefix: &RedisPrefix,
        revision: u64,
        notify: bool,
    ) {
        self.snap.revision = revision;
        let stored = signed_snapshot::sign(
            &MasterKey::from_base64(MASTER_KEY).expect("key"),
            &prefix.0,
            &self.snap.encode_to_vec(),
        );
        store_snapshot(redis, prefix, revision, stored, notify).await;
    }
}

/// Stores `stored` (signed or not: tests forge some) as the snapshot at
/// `revision` and (when `notify`) publishes the change.
pub async fn store_snapshot(
    redis: &RedisConfig,
    prefix: &RedisPrefix,
    revision: u64,
    stored: Vec<u8>,
    notify: bool,
) {
    let keys = RedisKeys::new(prefix.0.clone());
    let client = Redis::open(redis).expect("redis config");
    let mut c = client
        .connect(Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(2),
        })
        .await
        .expect("Redis must be running for the tests");
    let _: () = redis::cmd("SET")
        .arg(keys.snapshot())
        .arg(stored)
        .query_async(&mut c)
        .await
        .expect("SET");
    let _: () = redis::cmd("SET")
        .arg(keys.snapshot_revision())
        .arg(revision)
        .query_async(&mut c)
        .await
        .expect("SET");
    if notify {
        let msg = ChangeMessage {
            revision,
            resource: Resource::Pool,
            action: Action::Updated,
            id: String::new(),
            name: String::new(),
            commit_time_ms: 0,
            actor: String::new(),
        };
        let _: i64 = redis::cmd("PUBLISH")
            .arg(keys.changes_channel())
            .arg(serde_json::to_string(&msg).expect("json"))
            .query_async(&mut c)
            .await
            .expect("PUBLISH");
    }
}
