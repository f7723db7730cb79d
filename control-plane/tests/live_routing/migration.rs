//! m0004 on a store written before it, down and up again.

use super::*;

both_backends!(m0004_upgrades_stored_config_and_rolls_back);

/// A config stored before m0004 keeps working after it: members get no
/// cap, window or key, tiers no condition, providers no keys. m0004's down
/// migration runs on a populated store, and up again.
async fn m0004_upgrades_stored_config_and_rolls_back(backend: Backend) {
    use sea_orm_migration::MigratorTrait as _;
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let mut cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_provider(
        &mut c,
        pb::Provider {
            keys: vec![key("b", reference("env:SWITCHYARD_CRED_B"))],
            ..openai_provider("prov", OWN)
        },
    )
    .await;
    create_pool(&mut c, pool("p")).await;
    let m = create_member(
        &mut c,
        pb::Member {
            max_concurrency: Some(3),
            key: "b".into(),
            ..member("p", "prov", "m")
        },
    )
    .await;
    c.create_route(pb::CreateRouteRequest {
        route: Some(pb::Route {
            name: "r".into(),
            tiers: vec![tier(
                "p",
                Some(pb::TierCondition {
                    tools: true,
                    ..Default::default()
                }),
            )],
            ..Default::default()
        }),
    })
    .await
    .expect("route");
    cp.terminate().await;

    // Back to m0003 (with rows in every table m0004 touches), then up again.
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    switchyard_migrations::Migrator::down(&conn, Some(1))
        .await
        .expect("m0004 down");
    switchyard_migrations::Migrator::up(&conn, None)
        .await
        .expect("m0004 up");
    drop(conn);

    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let got = c
        .get_member(pb::GetRequest {
            id_or_name: m.id.clone(),
        })
        .await
        .expect("member survives")
        .into_inner();
    assert_eq!(
        (got.max_concurrency, got.context_tokens, got.key.as_str()),
        (None, None, "")
    );
    let r = c
        .get_route(pb::GetRequest {
            id_or_name: "r".into(),
        })
        .await
        .expect("route survives")
        .into_inner();
    assert_eq!(r.tiers[0].when, None, "no condition: every request");
    let p = c
        .get_provider(pb::GetRequest {
            id_or_name: "prov".into(),
        })
        .await
        .expect("provider survives")
        .into_inner();
    assert!(p.keys.is_empty());
    assert_eq!(p.credential_info.expect("own").fingerprint, "...cdef");
}
