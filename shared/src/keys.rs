//! Redis key and channel names; everything lives under one prefix so several
//! deployments (or tests) can share a Redis.
//!
//! Redis Cluster: every script touches one key, or keys that share a hash
//! tag (the part in `{…}`), so no script crosses slots:
//! - `{P:config}:snapshot`, `{P:config}:revision` — written together by the
//!   control plane's publish script;
//! - `{P:health}:members`, `{P:health}:version` — the fleet's health table and
//!   its change counter, changed together by the health scripts;
//! - `P:rr:<pool>`, `P:quota:<member>` and `P:workers` — one key per script;
//! - `{P:load}:members` — the workers' live-signal reports, one hash;
//! - `{P:slots}:<member>` — capped members' slot shares, leased together
//!   by one script.
//!
//! Channels (`P:config:changes`, `P:health:changes`) are classic pub/sub,
//! which a cluster delivers to subscribers on every node.

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
        format!("{{{}:config}}:snapshot", self.prefix)
    }

    /// The revision of the stored snapshot, as a decimal integer.
    pub fn snapshot_revision(&self) -> String {
        format!("{{{}:config}}:revision", self.prefix)
    }

    /// A pool's round-robin counter, shared by every worker (leased in blocks).
    pub fn rr_counter(&self, pool_id: &str) -> String {
        format!("{}:rr:{pool_id}", self.prefix)
    }

    /// The fleet's health table: a hash, one field per member with failures,
    /// a bench or a probe.
    pub fn health_table(&self) -> String {
        format!("{{{}:health}}:members", self.prefix)
    }

    /// Bumped by every change to the health table; messages carry it, so a
    /// worker sees a lost one.
    pub fn health_version(&self) -> String {
        format!("{{{}:health}}:version", self.prefix)
    }

    /// Live workers (a sorted set: worker id → last heartbeat, Redis ms), so
    /// each can take its share of a limit while Redis is unreachable.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// Pub/sub channel carrying every change to the health table.
    pub fn health_channel(&self) -> String {
        format!("{}:health:changes", self.prefix)
    }

    /// Every member's last known headroom from its provider's rate-limit
    /// headers: a hash, one field per member (`fleet/headroom.rs`).
    pub fn headroom_table(&self) -> String {
        format!("{{{}:headroom}}:members", self.prefix)
    }

    /// Pub/sub channel carrying every headroom report (`member\treport`).
    pub fn headroom_channel(&self) -> String {
        format!("{}:headroom:changes", self.prefix)
    }

    /// A member's rpm/tpm usage (hash: `r:<minute>` requests and
    /// `t:<minute>` tokens per Unix minute of Redis's clock, the last few
    /// minutes only). It expires.
    pub fn member_quota(&self, member_id: &str) -> String {
        format!("{}:quota:{member_id}", self.prefix)
    }

    /// A capped member's slot shares (hash: worker id → `grant|want|expires
    /// ms`); every member's under one hash tag, so one script leases all.
    pub fn member_slots(&self, member_id: &str) -> String {
        format!("{{{}:slots}}:{member_id}", self.prefix)
    }

    /// A caller's token budgets (a hash: one field per day and per month).
    pub fn budget(&self, caller: &str) -> String {
        format!("{}:budget:{caller}", self.prefix)
    }

    /// Live signals: a hash, one field per worker holding its last report
    /// of each member's in-flight count and latency estimates. One key, so
    /// one pipeline writes a report and reads the fleet's on any cluster.
    pub fn load_reports(&self) -> String {
        format!("{{{}:load}}:members", self.prefix)
    }

    /// One time bucket of pool statistics (`bucket`: its start, Unix
    /// seconds). Every bucket shares a hash tag, so one pipeline reads a window.
    pub fn stats_bucket(&self, bucket: i64) -> String {
        format!("{{{}:stats}}:{bucket}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash-tag part Redis Cluster slots a key by.
    fn tag(key: &str) -> &str {
        match key.find('{') {
            Some(s) => match key[s + 1..].find('}') {
                Some(e) if e > 0 => &key[s + 1..s + 1 + e],
                _ => key,
            },
            None => key,
        }
    }

    #[test]
    fn every_key_is_under_the_prefix() {
        let k = RedisKeys::new("t1");
        for key in [
            k.changes_channel(),
            k.snapshot(),
            k.snapshot_revision(),
            k.rr_counter("p"),
            k.health_table(),
            k.health_version(),
            k.health_channel(),
            k.member_quota("m"),
            k.workers(),
            k.load_reports(),
            k.member_slots("m"),
            k.headroom_table(),
            k.headroom_channel(),
        ] {
            assert!(
                key.trim_start_matches('{').starts_with("t1:"),
                "{key} is not under the prefix"
            );
        }
        assert_ne!(k.snapshot(), k.snapshot_revision());
    }

    #[test]
    fn keys_a_script_touches_together_share_a_slot() {
        let k = RedisKeys::new("t1");
        assert_eq!(tag(&k.snapshot()), tag(&k.snapshot_revision()));
        assert_eq!(tag(&k.health_table()), tag(&k.health_version()));
        assert_eq!(tag(&k.member_slots("a")), tag(&k.member_slots("b")));
        assert_ne!(tag(&k.snapshot()), tag(&k.health_table()));
        assert_ne!(
            tag(&k.rr_counter("a")),
            tag(&k.rr_counter("b")),
            "pools spread over the cluster"
        );
    }
}
