//! Redis key and channel names; everything lives under one prefix so several
//! deployments (or tests) can share a Redis.

/// The key layout for one deployment.
#[derive(Clone, Debug)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Pub/sub channel carrying one JSON change event per committed revision.
    pub fn changes_channel(&self) -> String {
        format!("{}:config:changes", self.prefix)
    }

    /// Protobuf-encoded `switchyard.v1.Snapshot` at the latest published revision.
    pub fn snapshot(&self) -> String {
        format!("{}:config:snapshot", self.prefix)
    }

    /// The revision of the stored snapshot, as a decimal integer.
    pub fn snapshot_revision(&self) -> String {
        format!("{}:config:revision", self.prefix)
    }

    /// A pool's round-robin counter, shared by every worker.
    pub fn rr_counter(&self, pool_id: &str) -> String {
        format!("{}:rr:{pool_id}", self.prefix)
    }

    /// A member's health hash (fails, benches, until); it expires.
    pub fn member_health(&self, member_id: &str) -> String {
        format!("{}:health:{member_id}", self.prefix)
    }

    /// A member's usage in one minute (hash: `r` requests, `t` tokens), for
    /// rpm/tpm limits; `minute` is Unix minutes. It expires.
    pub fn member_quota(&self, member_id: &str, minute: i64) -> String {
        format!("{}:quota:{member_id}:{minute}", self.prefix)
    }

    /// A pool's half-open probe token.
    pub fn probe_token(&self, pool_id: &str) -> String {
        format!("{}:probe:{pool_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_under_the_prefix() {
        let k = RedisKeys::new("t1");
        for key in [
            k.changes_channel(),
            k.snapshot(),
            k.snapshot_revision(),
            k.rr_counter("p"),
            k.member_health("m"),
            k.probe_token("p"),
        ] {
            assert!(key.starts_with("t1:"), "{key}");
        }
        assert_ne!(k.snapshot(), k.snapshot_revision());
    }
}
