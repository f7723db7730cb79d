//! The fleet's two backends — Redis scripts (production) and the in-memory
//! rules (embedded default, unit tests) — run the same sequence of events
//! and must agree on every member's health after each step.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use switchyard_data_plane::fleet::memory::MemoryBackend;
use switchyard_data_plane::fleet::permits::Want;
use switchyard_data_plane::fleet::redis::RedisBackend;
use switchyard_data_plane::fleet::{Backend, Entry, Failure};
use switchyard_data_plane::model::Limits;
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::{Redis, RedisConfig};
use switchyard_testkit::harness::{RedisPrefix, redis_url};

/// What must agree: counts, whether benched, whether probed.
fn view(e: &Entry) -> (u32, u32, bool, Option<String>) {
    let now = tokio::time::Instant::now();
    (
        e.fails,
        e.benches,
        e.benched_at(now),
        e.probe
            .as_ref()
            .filter(|p| now < p.until)
            .map(|p| p.owner.clone()),
    )
}

const STALE: Duration = Duration::from_secs(60);

fn failure(retry_after_ms: u64) -> Failure {
    Failure {
        threshold: 2,
        // Short enough that a bench ends within the test.
        cooldown_base: Duration::from_millis(40),
        cooldown_max: Duration::from_millis(100),
        retry_after: (retry_after_ms > 0).then(|| Duration::from_millis(retry_after_ms)),
        escalates: true,
    }
}

#[tokio::test]
async fn redis_and_memory_backends_agree_on_every_step() {
    let prefix = RedisPrefix::new();
    let redis = Redis::open(&RedisConfig {
        url: redis_url(),
        ..RedisConfig::default()
    })
    .expect("redis");
    let backends: [Arc<dyn Backend>; 2] = [
        Arc::new(MemoryBackend::default()),
        Arc::new(RedisBackend::new(redis, RedisKeys::new(prefix.0.clone()))),
    ];
    let ttl = Duration::from_secs(5);
    // Usage is kept per member in Redis: a fresh one for this test.
    let quota_member = format!("q-{}", prefix.0);
    let mut steps: Vec<[String; 2]> = Vec::new();
    let mut record = |what: &str, views: Vec<String>| {
        steps.push([
            format!("{what}: {}", views[0]),
            format!("{what}: {}", views[1]),
        ]);
    };
    macro_rules! each {
        ($what:expr, |$b:ident| $body:expr) => {{
            let mut views = Vec::new();
            for $b in &backends {
                views.push(format!("{:?}", $body));
            }
            record($what, views);
        }};
    }
    each!("first failure", |b| view(
        &b.fail("m", &failure(0), None).await.expect("fail")
    ));
    each!("second failure benches", |b| view(
        &b.fail("m", &failure(0), None).await.expect("fail")
    ));
    each!("claim while benched", |b| b
        .claim("m", "w1", ttl, STALE)
        .await
        .expect("claim")
        .0);
    each!("in-flight failure while benched", |b| view(
        &b.fail("m", &failure(0), None).await.expect("fail")
    ));
    tokio::time::sleep(Duration::from_millis(60)).await;
    each!("claim after the bench", |b| {
        let (granted, e) = b.claim("m", "w1", ttl, STALE).await.expect("claim");
        (granted, view(&e))
    });
    each!("a second claimant", |b| b
        .claim("m", "w2", ttl, STALE)
        .await
        .expect("claim")
        .0);
    each!("release by a stranger", |b| view(
        &b.release("m", "w2").await.expect("release")
    ));
    each!("the probe fails: doubled bench", |b| view(
        &b.fail("m", &failure(0), Some("w1")).await.expect("fail")
    ));
    each!("Retry-After extends it", |b| {
        let e = b.fail("m", &failure(5_000), None).await.expect("fail");
        let left = e
            .benched_until
            .map(|u| u.saturating_duration_since(tokio::time::Instant::now()));
        (view(&e), left.is_some_and(|l| l > Duration::from_secs(4)))
    });
    each!("a success in flight does not end the bench", |b| view(
        &b.succeed("m", None).await.expect("succeed")
    ));
    each!("a rate limit benches at once without escalating", |b| view(
        &b.fail("r", &Failure::bench_for(Duration::from_millis(50)), None)
            .await
            .expect("bench")
    ));
    tokio::time::sleep(Duration::from_millis(70)).await;
    each!("after it, one probe", |b| {
        let (granted, e) = b.claim("r", "w3", ttl, STALE).await.expect("claim");
        (granted, view(&e))
    });
    each!("the probe's success clears it", |b| view(
        &b.succeed("r", Some("w3")).await.expect("succeed")
    ));
    each!("merge of what a worker learned alone", |b| {
        let mut local = Entry::new(tokio::time::Instant::now());
        local.fails = 4;
        local.benches = 2;
        local.benched_until = Some(tokio::time::Instant::now() + Duration::from_secs(3));
        view(&b.merge("m", &local).await.expect("merge"))
    });
    each!("the table as loaded", |b| {
        let (t, _) = b.load().await.expect("load");
        t.get("m").map(view)
    });
    each!("permits: rpm 3", |b| {
        let limits = Limits {
            rpm: Some(3),
            tpm: Some(1000),
        };
        let mut out = Vec::new();
        // What they agree on: what is granted and the counts (the time left
        // in the window is the clock's, to the ms or the s).
        for requests in [2, 2, 1] {
            let want = Want {
                requests,
                tokens: 300,
            };
            let g = b
                .permits(&quota_member, limits, want)
                .await
                .expect("permits");
            out.push((g.requests, g.tokens, g.used_requests, g.used_tokens));
        }
        // Unused permits given back make room again.
        b.charge(&quota_member, 0, -1, -100).await.expect("charge");
        let want = Want {
            requests: 5,
            tokens: 500,
        };
        let g = b
            .permits(&quota_member, limits, want)
            .await
            .expect("permits");
        out.push((g.requests, g.tokens, g.used_requests, g.used_tokens));
        (out, b.usage(&quota_member).await.expect("usage"))
    });
    each!("leases are contiguous", |b| {
        let a = b.lease("pool", 5).await.expect("lease");
        let c = b.lease("pool", 3).await.expect("lease");
        c - a
    });
    for [memory, redis] in &steps {
        assert_eq!(memory, redis, "the backends disagree");
    }
    assert_eq!(steps.len(), 17);
    assert!(
        steps[9][0].ends_with("(5, 2, true, None)"),
        "{}",
        steps[9][0]
    );
    assert!(
        steps[10][0].ends_with("(1, 1, true, None)"),
        "a rate limit's bench is not doubled, and counts as one: {}",
        steps[10][0]
    );
    assert!(
        steps[11][0].contains("one probe: (true"),
        "a rate limit's bench ends half-open: {}",
        steps[11][0]
    );
    assert!(
        steps[12][0].ends_with("(0, 1, false, None)"),
        "{}",
        steps[12][0]
    );
    // And what they agree on is the rule.
    assert_eq!(steps[2][0], "claim while benched: false");
    assert!(
        steps[4][0].starts_with("claim after the bench: (true"),
        "{}",
        steps[4][0]
    );
    assert_eq!(steps[5][0], "a second claimant: false");
    assert!(
        steps[7][0].contains("(4, 2, true, None)"),
        "{}",
        steps[7][0]
    );
    assert!(
        steps[15][0].ends_with(
            "([(2, 300, 2, 300), (1, 300, 3, 600), (0, 0, 3, 600), (1, 500, 3, 1000)], (3, 1000))"
        ),
        "at most what is left under each limit; what is given back is leased again: {}",
        steps[15][0]
    );
}
