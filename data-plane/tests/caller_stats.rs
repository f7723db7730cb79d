//! Usage per caller, fleet-wide, with the real binaries: the control plane
//! makes three callers; two of them call across two workers on one Redis
//! prefix (served, refused out of scope, streamed); `GetCallerStats`, asked
//! of either worker, adds up every worker's counts and tokens per caller and
//! per model asked for. A caller key sees only itself; the deprecated token
//! sees everyone.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

const ADMIN: &str = "caller-stats-admin-token";

/// A new caller with `models`; its key.
async fn create_caller(cp: &mut Cp, name: &str, models: &[&str]) -> String {
    cp.create_caller(pb::CreateCallerRequest {
        caller: Some(pb::Caller {
            name: name.into(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            ..Default::default()
        }),
    })
    .await
    .expect("create caller")
    .into_inner()
    .key
}

/// What a caller was told it used, per model: (requests, failed, input, output).
#[derive(Default)]
struct Told(BTreeMap<String, (u64, u64, u64, u64)>);

impl Told {
    async fn unary(&mut self, c: &mut Dp, model: &str) -> Result<(), tonic::Status> {
        let row = self.0.entry(model.to_owned()).or_default();
        row.0 += 1;
        match c.generate(ask(model, "count me")).await {
            Ok(r) => {
                let u = r.into_inner().usage.expect("usage");
                row.2 += u64::from(u.input_tokens);
                row.3 += u64::from(u.output_tokens);
                Ok(())
            }
            Err(s) => {
                row.1 += 1;
                Err(s)
            }
        }
    }

    async fn stream(&mut self, c: &mut Dp, model: &str) {
        let s = c
            .generate_stream(ask(model, "stream me"))
            .await
            .expect("stream opens")
            .into_inner();
        let (events, _) = drain_ok(s).await;
        let u = events
            .iter()
            .find_map(|e| match &e.event {
                Some(pb::generate_stream_event::Event::Usage(u)) => Some(*u),
                _ => None,
            })
            .expect("the stream reports usage");
        let row = self.0.entry(model.to_owned()).or_default();
        row.0 += 1;
        row.2 += u64::from(u.input_tokens);
        row.3 += u64::from(u.output_tokens);
    }

    fn total(&self) -> (u64, u64, u64, u64) {
        self.0.values().fold((0, 0, 0, 0), |t, r| {
            (t.0 + r.0, t.1 + r.1, t.2 + r.2, t.3 + r.3)
        })
    }

    /// `stats` says what the caller was told, in total and per model.
    fn check(&self, stats: &pb::CallerStats) {
        let c = stats;
        assert_eq!(
            (c.requests, c.failed, c.input_tokens, c.output_tokens),
            self.total(),
            "{c:?}"
        );
        let models: BTreeMap<String, (u64, u64, u64, u64)> = c
            .models
            .iter()
            .map(|m| {
                (
                    m.model.clone(),
                    (m.requests, m.failed, m.input_tokens, m.output_tokens),
                )
            })
            .collect();
        assert_eq!(models, self.0, "per model asked for: {c:?}");
    }
}

async fn caller_stats(
    c: &mut Dp,
    caller: &str,
) -> Result<pb::GetCallerStatsResponse, tonic::Status> {
    c.get_caller_stats(pb::GetCallerStatsRequest {
        caller: caller.into(),
        window_seconds: 300,
    })
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn usage_per_caller_adds_up_across_workers_and_a_caller_sees_only_itself() {
    let fake = fake().await;
    let prefix = RedisPrefix::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = control_plane(&prefix, dir.path(), ADMIN, &[]).await;
    // Caller keys, with the deprecated token list still set: the harness
    // waits for revisions with it, and it is the view that sees everyone.
    let env = [
        ("SWITCHYARD_INFERENCE_TOKENS", CALLER_TOKEN),
        ("SWITCHYARD_STATS_FLUSH_MS", "200"),
    ];
    let w1 = worker(&redis_url(), &prefix, &env).await;
    let w2 = worker(&redis_url(), &prefix, &env).await;
    let mut admin = admin_client(&cp, ADMIN).await;
    two_pools(&mut admin, &fake.base_url()).await;
    let billing_key = create_caller(&mut admin, "billing-svc", &["coding"]).await;
    let search_key = create_caller(&mut admin, "search-svc", &["*"]).await;
    create_caller(&mut admin, "idle-svc", &["*"]).await;
    let rev = admin
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner()
        .revision;
    wait_revision(&w1, rev).await;
    wait_revision(&w2, rev).await;

    // billing-svc: 3 served on w1, 2 on w2, and one refused out of scope.
    let (mut b1, mut b2) = (
        as_caller(&w1, bearer(&billing_key)).await,
        as_caller(&w2, bearer(&billing_key)).await,
    );
    let mut billing = Told::default();
    for _ in 0..3 {
        billing.unary(&mut b1, "coding").await.expect("served");
    }
    for _ in 0..2 {
        billing.unary(&mut b2, "coding").await.expect("served");
    }
    let refused = billing
        .unary(&mut b2, "secret-pool")
        .await
        .expect_err("out of scope");
    assert_eq!(refused.code(), Code::PermissionDenied);
    // search-svc: 2 served on w1, 2 on w2 in another pool, one stream on w2.
    let (mut s1, mut s2) = (
        as_caller(&w1, bearer(&search_key)).await,
        as_caller(&w2, bearer(&search_key)).await,
    );
    let mut search = Told::default();
    for _ in 0..2 {
        search.unary(&mut s1, "coding").await.expect("served");
        search.unary(&mut s2, "secret-pool").await.expect("served");
    }
    search.stream(&mut s2, "coding").await;
    assert_eq!((billing.total().0, search.total().0), (6, 5));

    // Asked of either worker, the token sees every worker's counts (bounded
    // wait: each worker flushes every 200 ms).
    let mut seen = None;
    let mut everyone = [
        as_caller(&w1, bearer(CALLER_TOKEN)).await,
        as_caller(&w2, bearer(CALLER_TOKEN)).await,
    ];
    for i in 0..100 {
        let r = everyone[i % 2]
            .get_caller_stats(pb::GetCallerStatsRequest {
                caller: String::new(),
                window_seconds: 0,
            })
            .await
            .expect("caller stats")
            .into_inner();
        let requests = |name: &str| {
            r.callers
                .iter()
                .find(|c| c.caller == name)
                .map(|c| c.requests)
        };
        if requests("billing-svc") == Some(billing.total().0)
            && requests("search-svc") == Some(search.total().0)
        {
            seen = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = seen.expect("both workers' requests reach the fleet's caller statistics");
    assert_eq!(all.window_seconds, 300);
    assert!(all.from_unix_ms < all.to_unix_ms);
    let names: Vec<&str> = all.callers.iter().map(|c| c.caller.as_str()).collect();
    assert_eq!(
        names,
        ["billing-svc", "idle-svc", "search-svc"],
        "every configured caller, also one that made no call, in name order"
    );
    billing.check(&all.callers[0]);
    search.check(&all.callers[2]);
    assert_eq!(
        all.callers[0].failures.get("permission_denied"),
        Some(&1),
        "{:?}",
        all.callers[0]
    );
    assert_eq!(all.callers[1].requests, 0);
    assert!(
        billing.total().2 > 0 && search.total().3 > 0,
        "tokens counted"
    );

    // The other worker, asked for one caller by name, says the same.
    let one = caller_stats(&mut everyone[1], "search-svc")
        .await
        .expect("one caller");
    assert_eq!(one.callers.len(), 1);
    search.check(&one.callers[0]);

    // A caller sees itself, on either worker, and nobody else.
    for (c, name, told) in [
        (&mut b2, "billing-svc", &billing),
        (&mut s1, "search-svc", &search),
    ] {
        let own = caller_stats(c, "").await.expect("own stats");
        assert_eq!(own.callers.len(), 1, "{own:?}");
        assert_eq!(own.callers[0].caller, name);
        told.check(&own.callers[0]);
        let same = caller_stats(c, name).await.expect("by its own name");
        assert_eq!(same.callers, own.callers);
    }
    let denied = caller_stats(&mut b1, "search-svc")
        .await
        .expect_err("another caller's stats");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("only its own"),
        "{}",
        denied.message()
    );

    // Mistakes are named.
    let err = caller_stats(&mut everyone[0], "nobody")
        .await
        .expect_err("unknown caller");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let err = everyone[0]
        .get_caller_stats(pb::GetCallerStatsRequest {
            caller: String::new(),
            window_seconds: 5,
        })
        .await
        .expect_err("window too short");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("60 to 3600"), "{}", err.message());
}
