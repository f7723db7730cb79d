//! Route tiers' conditions.

use super::*;

both_backends!(tier_conditions);

async fn tier_conditions(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_pool(&mut c, pool("vision")).await;
    create_pool(&mut c, pool("long")).await;
    create_pool(&mut c, pool("any")).await;

    let vision = pb::TierCondition {
        images: true,
        tools: true,
        ..Default::default()
    };
    let long = pb::TierCondition {
        reasoning: true,
        min_prompt_tokens: 32_000,
        ..Default::default()
    };
    let route = c
        .create_route(pb::CreateRouteRequest {
            route: Some(pb::Route {
                name: "smart".into(),
                tiers: vec![
                    tier("vision", Some(vision)),
                    tier("long", Some(long)),
                    // Asks nothing: every request (shown as no condition).
                    tier("any", Some(pb::TierCondition::default())),
                ],
                ..Default::default()
            }),
        })
        .await
        .expect("create route")
        .into_inner();
    let whens: Vec<Option<pb::TierCondition>> = route.tiers.iter().map(|t| t.when).collect();
    assert_eq!(whens, [Some(vision), Some(long), None]);
    let got = c
        .get_route(pb::GetRequest {
            id_or_name: "smart".into(),
        })
        .await
        .expect("get route")
        .into_inner();
    assert_eq!(got.tiers, route.tiers);

    let (code, msg) = refused(
        c.update_route(pb::UpdateRouteRequest {
            route: Some(pb::Route {
                name: "smart".into(),
                tiers: vec![tier(
                    "any",
                    Some(pb::TierCondition {
                        min_prompt_tokens: 10_000_001,
                        ..Default::default()
                    }),
                )],
                ..Default::default()
            }),
            update_mask: mask(&["tiers"]),
        })
        .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        msg.contains(
            "route.tiers[0].when.min_prompt_tokens is 10000001; it must be between 0 and 10000000"
        ),
        "{msg}"
    );

    let rev = revision(&mut c).await;
    let snap = wait_snapshot(&prefix, rev).await;
    let r = snap
        .routes
        .iter()
        .find(|r| r.name == "smart")
        .expect("route");
    let whens: Vec<Option<pb::TierCondition>> = r.tiers.iter().map(|t| t.when).collect();
    assert_eq!(whens, [Some(vision), Some(long), None]);
}
