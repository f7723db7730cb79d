//! The configuration the workers load: snapshots built in code, written to
//! Redis the way the control plane publishes them (key names only through
//! `RedisKeys`), and every bench key deleted at the end.

use prost::Message as _;
use serde_json::json;
use switchyard_proto::v1 as pb;
use switchyard_shared::keys::RedisKeys;

pub type Redis = redis::aio::MultiplexedConnection;

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn provider(name: &str, kind: pb::ProviderKind, url: &str) -> pb::SnapshotProvider {
    pb::SnapshotProvider {
        id: id(),
        name: name.into(),
        kind: kind as i32,
        base_url: url.into(),
        timeouts: Some(pb::Timeouts { connect_ms: 1000, first_byte_ms: 5000, request_ms: 30_000 }),
        enabled: true,
        ..Default::default()
    }
}

fn member(provider_id: &str, model: &str, priority: i32) -> pb::SnapshotMember {
    let status = pb::MemberStatus::Active as i32;
    let (id, provider_id, upstream_model) = (id(), provider_id.into(), model.into());
    pb::SnapshotMember { id, provider_id, upstream_model, weight: 1, priority, status, ..Default::default() }
}

fn policy(retries: u32, threshold: u32, cooldown_base_ms: u32, cooldown_max_ms: u32) -> pb::FailoverPolicy {
    pb::FailoverPolicy {
        transient_retries: retries,
        failure_threshold: threshold,
        cooldown_base_ms,
        cooldown_max_ms,
        advance_on_permanent: false,
    }
}

fn pool(
    name: &str,
    s: pb::Strategy,
    failover: pb::FailoverPolicy,
    members: Vec<pb::SnapshotMember>,
) -> pb::SnapshotPool {
    let (id, name, strategy) = (id(), name.into(), s as i32);
    pb::SnapshotPool { id, name, strategy, failover: Some(failover), enabled: true, members, allow_request_extra: None }
}

/// Revision 1 of the main prefix: providers "fake" and "dead" (a closed port);
/// pools "bench" (round robin over m1..m3), "bench-limited" (the same with
/// generous rpm/tpm limits), "bench-failover" and its twin
/// "bench-failover-warm" (PRIORITY: the dead member, then m2 on the fake;
/// threshold 1000 so the dead member is never benched; the warm-up uses the
/// twin so the measured dead member starts from zero failures), and `extra`
/// pools of 10 members.
pub fn bench_snapshot(base_url: &str, extra: usize) -> pb::Snapshot {
    let fake = provider("fake", pb::ProviderKind::Openai, base_url);
    let dead = provider("dead", pb::ProviderKind::Openai, "http://127.0.0.1:1/v1");
    let (round_robin, priority) = (pb::Strategy::RoundRobin, pb::Strategy::Priority);
    let bench = ["m1", "m2", "m3"].iter().map(|m| member(&fake.id, m, 0)).collect();
    let failover = || vec![member(&dead.id, "m1", 10), member(&fake.id, "m2", 0)];
    // The same members with rpm/tpm limits far above the load: held from
    // leased blocks of permits, they should cost Redis about nothing more.
    let limited = ["m1", "m2", "m3"]
        .iter()
        .map(|m| pb::SnapshotMember {
            rpm_limit: Some(100_000_000),
            tpm_limit: Some(100_000_000_000),
            ..member(&fake.id, m, 0)
        })
        .collect();
    let mut pools = vec![
        pool("bench", round_robin, policy(1, 3, 1000, 300_000), bench),
        pool("bench-limited", round_robin, policy(1, 3, 1000, 300_000), limited),
        // One attempt per member, never benched: every call fails over once.
        pool("bench-failover", priority, policy(0, 1000, 1000, 300_000), failover()),
        pool("bench-failover-warm", priority, policy(0, 1000, 1000, 300_000), failover()),
    ];
    for i in 0..extra {
        let members = (0..10).map(|j| member(&fake.id, &format!("x{j}"), 0)).collect();
        pools.push(pool(&format!("extra-{i:05}"), round_robin, policy(1, 3, 1000, 300_000), members));
    }
    pb::Snapshot { revision: 1, providers: vec![fake, dead], pools, ..Default::default() }
}

/// Upstream model id whose calls answer HTTP 503 (fault in the model id).
pub const BAD_MODEL: &str = "m?status=503";

/// Revision 1 of the propagation prefix: pool "prop", PRIORITY, member `bad`
/// (priority 10, model [`BAD_MODEL`]) then a healthy `m1` on the fake;
/// no retries, benched after one failure for `cooldown_ms` (constant: base =
/// max). `bad` is on the fake when `bad_on_fake`, else on a MOCK provider
/// (the worker's in-process fake, which reads faults from the model id).
/// Also returns `bad`'s member id.
pub fn prop_snapshot(base_url: &str, bad_on_fake: bool, cooldown_ms: u32) -> (pb::Snapshot, String) {
    let fake = provider("fake", pb::ProviderKind::Openai, base_url);
    let mock = provider("mock", pb::ProviderKind::Mock, "");
    let bad = member(if bad_on_fake { &fake.id } else { &mock.id }, BAD_MODEL, 10);
    let bad_id = bad.id.clone();
    let members = vec![bad, member(&fake.id, "m1", 0)];
    let pools = vec![pool("prop", pb::Strategy::Priority, policy(0, 1, cooldown_ms, cooldown_ms), members)];
    (pb::Snapshot { revision: 1, providers: vec![fake, mock], pools, ..Default::default() }, bad_id)
}

/// Revision 1 of the config-propagation prefix: provider "fake" and pool
/// "cfg", ROUND_ROBIN over m1..m3 on it (the trials publish it again with
/// higher revisions).
pub fn cfg_snapshot(base_url: &str) -> pb::Snapshot {
    let fake = provider("fake", pb::ProviderKind::Openai, base_url);
    let members = ["m1", "m2", "m3"].iter().map(|m| member(&fake.id, m, 0)).collect();
    let pools = vec![pool("cfg", pb::Strategy::RoundRobin, policy(1, 3, 1000, 300_000), members)];
    pb::Snapshot { revision: 1, providers: vec![fake], pools, ..Default::default() }
}

/// Stores `snap` and its revision, then announces it on the change channel.
pub async fn publish(conn: &mut Redis, keys: &RedisKeys, snap: &pb::Snapshot) -> Result<(), String> {
    let name = snap.pools.first().map(|p| p.name.as_str()).unwrap_or_default();
    let action = if snap.revision > 1 { "updated" } else { "created" };
    let change = json!({"revision": snap.revision, "resource": "pool", "action": action, "id": "", "name": name});
    let writes = [
        ("SET", keys.snapshot(), snap.encode_to_vec()),
        ("SET", keys.snapshot_revision(), snap.revision.to_string().into_bytes()),
        ("PUBLISH", keys.changes_channel(), change.to_string().into_bytes()),
    ];
    for (cmd, key, value) in writes {
        let res = redis::cmd(cmd).arg(&key).arg(value).query_async::<()>(conn).await;
        res.map_err(|e| format!("cannot {cmd} {key}: {e}"))?;
    }
    Ok(())
}

/// Deletes every key whose name contains `prefix` (a unique `bench_<uuid>`),
/// so it holds whatever the key layout wraps around the prefix (hash tags...).
pub async fn delete_keys(conn: &mut Redis, prefix: &str) -> redis::RedisResult<u64> {
    let (mut cursor, mut deleted) = (0u64, 0u64);
    for _ in 0..100_000 {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(format!("*{prefix}*")).arg("COUNT").arg(1000);
        let (next, keys): (u64, Vec<String>) = scan.query_async(conn).await?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL").arg(&keys).query_async::<u64>(conn).await?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(deleted)
}
