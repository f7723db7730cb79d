//! `Embed` end to end: the real worker, Redis and a fake upstream on
//! loopback; the exact body an embedding member receives, float and base64
//! answers, the refusal of members without embeddings, and failover.

mod common;

use common::*;
use serde_json::json;
use switchyard_proto::v1 as pb;
use tonic::Code;

struct World {
    fake: FakeUpstream,
    _prefix: RedisPrefix,
    worker: ServerProc,
}

/// Pools over one fake upstream: "e" (two embedding members, "emb-1"
/// first) and "a" (an Anthropic member, which has no embeddings API).
async fn world() -> World {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    let prefix = RedisPrefix::new();
    let policy = policy(0, 3, 1000);
    let mut config = Config::default();
    config
        .provider(
            "oai",
            pb::ProviderKind::Openai,
            &fake.base_url(),
            Some("sk-oai"),
        )
        .provider(
            "ant",
            pb::ProviderKind::Anthropic,
            &fake.base_url(),
            Some("sk-ant"),
        )
        .pool(
            "e",
            pb::Strategy::Priority,
            policy,
            &[("oai", "emb-1", 10), ("oai", "emb-2", 0)],
        )
        .pool(
            "a",
            pb::Strategy::Priority,
            policy,
            &[("ant", "claude-x", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let worker = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&worker, 1).await;
    World {
        fake,
        _prefix: prefix,
        worker,
    }
}

#[tokio::test]
async fn embeddings_are_served_from_an_embedding_pool_with_failover_rules() {
    let w = world().await;
    let mut c = client(&w.worker).await;
    let input = |t: &str| pb::EmbedInput {
        input: Some(pb::embed_input::Input::Text(t.into())),
    };
    let r = c
        .embed(pb::EmbedRequest {
            model: "e".into(),
            inputs: vec![input("hello"), input("world")],
            dimensions: Some(3),
            ..Default::default()
        })
        .await
        .expect("embedded")
        .into_inner();
    assert_eq!(
        w.fake.last_body("emb-1"),
        Some(
            json!({"model": "emb-1", "input": ["hello", "world"], "encoding_format": "float", "dimensions": 3})
        )
    );
    assert_eq!(r.embeddings.len(), 2);
    assert!(r.embeddings.iter().all(|e| e.values.len() == 3));
    assert_ne!(r.embeddings[0].values, r.embeddings[1].values);
    assert_eq!(r.served_by.map(|s| s.pool), Some("e".into()));
    assert!(r.usage.is_some_and(|u| u.input_tokens > 0));
    // Base64: the same vectors as little-endian float32 bytes.
    let b = c
        .embed(pb::EmbedRequest {
            model: "e".into(),
            inputs: vec![input("hello"), input("world")],
            dimensions: Some(3),
            encoding: pb::EmbeddingEncoding::Base64.into(),
            ..Default::default()
        })
        .await
        .expect("embedded")
        .into_inner();
    let floats: Vec<f32> = b.embeddings[0]
        .data
        .chunks(4)
        .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .collect();
    assert_eq!(floats, r.embeddings[0].values);
    // Anthropic has no embeddings: a clear INVALID_ARGUMENT, nothing sent.
    let e = c
        .embed(pb::EmbedRequest {
            model: "a".into(),
            inputs: vec![input("x")],
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("no embeddings"), "{}", e.message());
    // A transient failure fails over like any unary call: the next member
    // serves; with every member failing, UNAVAILABLE.
    w.fake.set_fault("emb-1", status(503));
    let r = c
        .embed(pb::EmbedRequest {
            model: "e".into(),
            inputs: vec![input("x")],
            ..Default::default()
        })
        .await
        .expect("the second member serves")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        [
            ("emb-1".into(), pb::AttemptOutcome::Transient),
            ("emb-2".into(), pb::AttemptOutcome::Ok)
        ]
    );
    w.fake.set_fault("emb-2", status(503));
    let e = c
        .embed(pb::EmbedRequest {
            model: "e".into(),
            inputs: vec![input("x")],
            ..Default::default()
        })
        .await
        .expect_err("every member fails");
    assert_eq!(e.code(), Code::Unavailable);
}
