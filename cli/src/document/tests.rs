//! The config file's format: parsing, checks, round trips, schema.

use super::*;

/// As `switchyard validate` parses: the default allow-list.
fn parse(text: &str) -> Result<Document, Vec<lines::Problem>> {
    super::parse(
        text,
        Some(&switchyard_shared::credential_ref::ReferenceRules::default()),
    )
}

const FULL: &str = include_str!("../../../docs/examples/switchyard.yaml");

#[test]
fn the_documented_example_is_valid_and_round_trips() {
    let doc = parse(FULL).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(doc.version, VERSION);
    // File → API → file keeps everything.
    let back = Document::from_proto(doc.to_proto());
    let mut sorted = doc.clone();
    sorted.sort();
    assert_eq!(back, sorted);
    // Written out and read again: the same document.
    let text = back.to_yaml().expect("yaml");
    assert_eq!(parse(&text).expect("reads its own output"), back);
}

#[test]
fn defaults_are_left_out_when_writing() {
    let doc = Document {
        version: VERSION.into(),
        pools: vec![Pool {
            name: "p".into(),
            strategy: Strategy::RoundRobin,
            failover: None,
            enabled: true,
            description: String::new(),
            allow_request_extra: true,
            members: vec![Member {
                provider: "x".into(),
                model: "m".into(),
                weight: 1,
                priority: 0,
                status: Status::Active,
                rpm_limit: None,
                tpm_limit: None,
                max_output_tokens: None,
                max_concurrency: None,
                context_tokens: None,
                key: String::new(),
            }],
        }],
        ..Default::default()
    };
    let text = doc.to_yaml().expect("yaml");
    for absent in [
        "strategy",
        "failover",
        "enabled",
        "weight",
        "priority",
        "status",
        "allow_request_extra",
        "max_output_tokens",
        "max_concurrency",
        "context_tokens",
        "key",
        "when",
    ] {
        assert!(!text.contains(absent), "{absent} in:\n{text}");
    }
    // A default failover from the server is left out too.
    let mut api = doc.to_proto();
    api.pools[0].failover = Some(switchyard_proto::v1::FailoverPolicy {
        transient_retries: 1,
        failure_threshold: 3,
        cooldown_base_ms: 1000,
        cooldown_max_ms: 300_000,
        advance_on_permanent: false,
    });
    assert_eq!(Document::from_proto(api).pools[0].failover, None);
}

#[test]
fn problems_point_at_their_lines() {
    let text = "version: switchyard/v1\nproviders:\n  - name: a\n    kind: openai\n    base_url: https://x.test\n    credential: sk-live-0123456789abcdef\n\
                pools:\n  - name: p\n    members:\n      - provider: a\n        model: m\n      - provider: nope\n        model: m\n\
                routes:\n  - name: p\n    tiers:\n      - pool: p\n        direct: a/m\n";
    let problems = parse(text).expect_err("problems");
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |line: u64, what: &str| {
        problems
            .iter()
            .any(|p| p.line == Some(line) && p.message.contains(what))
    };
    assert!(has(3, "provider.credential.reference"), "{shown:#?}");
    assert!(has(12, "provider 'nope' is not declared"), "{shown:#?}");
    assert!(has(15, "both pool and direct"), "{shown:#?}");
    assert!(has(15, "share one namespace"), "{shown:#?}");
    assert!(
        !shown.iter().any(|s| s.contains("sk-live-0123456789abcdef")),
        "a pasted key is never echoed: {shown:#?}"
    );
    let typo = parse("version: switchyard/v1\npools:\n  - name: p\n    weight: 3\n")
        .expect_err("unknown field");
    assert_eq!(typo[0].line, Some(4), "{typo:?}");
    assert!(typo[0].message.contains("weight"), "{typo:?}");
    let version = parse("version: switchyard/v9\n").expect_err("version");
    assert_eq!(version[0].line, Some(1));
}

#[test]
fn request_settings_are_read_checked_and_written() {
    let text = concat!(
        "version: switchyard/v1\n",
        "providers:\n",
        "  - name: a\n",
        "    kind: mock\n",
        "pools:\n",
        "  - name: p\n",
        "    allow_request_extra: false\n",
        "    members:\n",
        "      - provider: a\n",
        "        model: m\n",
        "        max_output_tokens: 8192\n",
    );
    let doc = parse(text).unwrap_or_else(|p| panic!("{p:?}"));
    assert!(!doc.pools[0].allow_request_extra);
    assert_eq!(doc.pools[0].members[0].max_output_tokens, Some(8192));
    let api = doc.to_proto();
    assert_eq!(api.pools[0].allow_request_extra, Some(false));
    assert_eq!(api.members[0].max_output_tokens, Some(8192));
    let back = Document::from_proto(api).to_yaml().expect("yaml");
    assert!(back.contains("allow_request_extra: false"), "{back}");
    assert!(back.contains("max_output_tokens: 8192"), "{back}");

    let bad = text.replace("8192", "0");
    let problems = parse(&bad).expect_err("out of range");
    assert_eq!(problems[0].line, Some(9), "{problems:?}");
    assert!(
        problems[0]
            .message
            .contains("member.max_output_tokens is 0"),
        "{problems:?}"
    );
}

#[test]
fn the_published_schema_is_generated_from_these_types() {
    let published: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/config.schema.json"))
            .expect("docs/config.schema.json is JSON");
    assert_eq!(
        published,
        schema(),
        "docs/config.schema.json is stale: run `switchyard schema > docs/config.schema.json`"
    );
}

const LIVE_ROUTING: &str = concat!(
    "version: switchyard/v1\n",
    "providers:\n",
    "  - name: a\n",
    "    kind: openai\n",
    "    base_url: https://a.test/v1\n",
    "    credential: env:SWITCHYARD_CRED_A\n",
    "    keys:\n",
    "      - name: second\n",
    "        credential: env:SWITCHYARD_CRED_A2\n",
    "      - name: kept\n",
    "pools:\n",
    "  - name: p\n",
    "    strategy: quota_aware\n",
    "    members:\n",
    "      - provider: a\n",
    "        model: m\n",
    "        max_concurrency: 8\n",
    "        context_tokens: 128000\n",
    "        key: second\n",
    "routes:\n",
    "  - name: r\n",
    "    tiers:\n",
    "      - pool: p\n",
    "        when:\n",
    "          images: true\n",
    "          min_prompt_tokens: 32000\n",
    "      - pool: p\n",
    "        when: {}\n",
);

#[test]
fn keys_member_caps_and_tier_conditions_are_read_and_written() {
    use switchyard_proto::v1 as pb;
    let doc = parse(LIVE_ROUTING).unwrap_or_else(|p| panic!("{p:?}"));
    let api = doc.to_proto();
    let keys = &api.providers[0].keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].name, "second");
    assert!(matches!(
        keys[0].credential.as_ref().and_then(|c| c.source.as_ref()),
        Some(pb::credential_input::Source::Reference(r)) if r == "env:SWITCHYARD_CRED_A2"
    ));
    // A key without a credential keeps the stored one: none is sent.
    assert_eq!(keys[1].credential, None);
    let m = &api.members[0];
    assert_eq!(
        (m.max_concurrency, m.context_tokens, m.key.as_str()),
        (Some(8), Some(128_000), "second")
    );
    assert_eq!(api.pools[0].strategy, pb::Strategy::QuotaAware as i32);
    assert_eq!(
        api.routes[0].tiers[0].when,
        Some(pb::TierCondition {
            images: true,
            min_prompt_tokens: 32_000,
            ..Default::default()
        })
    );

    // Back to a file: the empty condition is left out, the rest kept.
    let back = Document::from_proto(api);
    assert_eq!(back.routes[0].tiers[1].when, None);
    let text = back.to_yaml().expect("yaml");
    for shown in [
        "name: second",
        "credential: env:SWITCHYARD_CRED_A2",
        "name: kept",
        "max_concurrency: 8",
        "context_tokens: 128000",
        "key: second",
        "images: true",
        "min_prompt_tokens: 32000",
        "strategy: quota_aware",
    ] {
        assert!(text.contains(shown), "{shown} missing in:\n{text}");
    }
    assert!(!text.contains("reasoning"), "{text}");
    assert_eq!(parse(&text).expect("reads its own output"), back);
}

#[test]
fn bad_keys_caps_and_conditions_point_at_their_lines() {
    let problem = |text: &str, line: u64, what: &str| {
        let problems = parse(text).expect_err("problems");
        assert!(
            problems
                .iter()
                .any(|p| p.line == Some(line) && p.message.contains(what)),
            "expected line {line}: {what}; got {problems:#?}"
        );
    };
    problem(
        &LIVE_ROUTING.replace("key: second", "key: nope"),
        15,
        "key 'nope' is not a key of provider 'a'",
    );
    problem(
        &LIVE_ROUTING.replace("name: kept", "name: second"),
        3,
        "'second' is given twice",
    );
    problem(
        &LIVE_ROUTING.replace("name: kept", "name: default"),
        3,
        "'default' is taken",
    );
    problem(
        &LIVE_ROUTING.replace("max_concurrency: 8", "max_concurrency: 0"),
        15,
        "member.max_concurrency is 0; it must be between 1 and 100000",
    );
    problem(
        &LIVE_ROUTING.replace("context_tokens: 128000", "context_tokens: 20000000"),
        15,
        "member.context_tokens is 20000000",
    );
    problem(
        &LIVE_ROUTING.replace("min_prompt_tokens: 32000", "min_prompt_tokens: 99000000"),
        21,
        "route.tiers[0].when.min_prompt_tokens",
    );
    problem(
        &LIVE_ROUTING.replace("env:SWITCHYARD_CRED_A2", "sk-live-0123456789abcdef"),
        3,
        "provider.keys[0].credential.reference",
    );
    // `default` names the provider's own credential.
    parse(&LIVE_ROUTING.replace("key: second", "key: default")).expect("default is a key");
}
