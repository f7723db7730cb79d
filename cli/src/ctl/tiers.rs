//! Route tiers on the command line: `pool:NAME` or `direct:PROVIDER/MODEL`,
//! `backup ` before backups, and a condition after (` when=images+tools`).

use switchyard_proto::v1 as pb;

/// A route tier: `pool:NAME` or `direct:PROVIDER/MODEL`, with `backup `
/// before backups and its condition after (`pool:vision when=images+tools`).
pub fn tier(t: &pb::RouteTier) -> String {
    let target = match &t.target {
        Some(pb::route_tier::Target::Pool(p)) => format!("pool:{p}"),
        Some(pb::route_tier::Target::Direct(d)) => format!("direct:{d}"),
        None => "-".into(),
    };
    let mut out = if t.backup {
        format!("backup {target}")
    } else {
        target
    };
    let when = switchyard_control_plane::store::condition_text(t.when.as_ref());
    if !when.is_empty() {
        out.push_str(" when=");
        out.push_str(&when);
    }
    out
}

/// A `--tier` as given: `pool:NAME` or `direct:PROVIDER/MODEL`, optionally
/// followed by ` when=` and the features a request must have, joined by
/// `+`: `images`, `reasoning`, `tools`, `prompt>=N` (estimated prompt tokens).
pub fn parse_tier(s: &str, backup: bool) -> anyhow::Result<pb::RouteTier> {
    use pb::route_tier::Target;
    let (spec, when) = match s.split_once(" when=") {
        Some((spec, when)) => (spec.trim(), Some(parse_condition(when)?)),
        None => (s.trim(), None),
    };
    let target = match spec.split_once(':') {
        Some(("pool", name)) if !name.is_empty() => Target::Pool(name.into()),
        Some(("direct", pm)) if pm.contains('/') => Target::Direct(pm.into()),
        _ => anyhow::bail!(
            "tier '{s}': use pool:NAME or direct:PROVIDER/MODEL, optionally followed by ' when=images+tools+prompt>=32000'"
        ),
    };
    Ok(pb::RouteTier {
        target: Some(target),
        backup,
        when,
    })
}

/// `images+reasoning+tools+prompt>=N`, any of them, in any order.
fn parse_condition(s: &str) -> anyhow::Result<pb::TierCondition> {
    let mut c = pb::TierCondition::default();
    for part in s.split('+').map(str::trim) {
        match part {
            "images" => c.images = true,
            "reasoning" => c.reasoning = true,
            "tools" => c.tools = true,
            _ => match part.strip_prefix("prompt>=").map(str::parse::<u64>) {
                Some(Ok(n)) => c.min_prompt_tokens = n,
                _ => anyhow::bail!(
                    "condition '{part}': use images, reasoning, tools or prompt>=N, joined by '+'"
                ),
            },
        }
    }
    Ok(c)
}

pub fn tiers(ts: &[pb::RouteTier]) -> String {
    ts.iter().map(tier).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_pool_and_direct_and_refuse_the_rest() {
        assert_eq!(tier(&parse_tier("pool:demo", false).unwrap()), "pool:demo");
        assert_eq!(
            tier(&parse_tier("direct:mock/meta/llama", true).unwrap()),
            "backup direct:mock/meta/llama"
        );
        assert!(parse_tier("demo", false).is_err());
        assert!(parse_tier("direct:nomodel", false).is_err());
        assert!(parse_tier("pool:", false).is_err());
    }

    #[test]
    fn tier_conditions_parse_and_show() {
        let t = parse_tier("pool:vision when=tools+images+prompt>=32000", false).unwrap();
        assert_eq!(
            t.when,
            Some(pb::TierCondition {
                images: true,
                tools: true,
                min_prompt_tokens: 32_000,
                ..Default::default()
            })
        );
        assert_eq!(tier(&t), "pool:vision when=images+tools+prompt>=32000");
        let t = parse_tier("direct:a/m when=reasoning", true).unwrap();
        assert_eq!(tier(&t), "backup direct:a/m when=reasoning");
        assert!(parse_tier("pool:p when=colour", false).is_err());
        assert!(parse_tier("pool:p when=prompt>=many", false).is_err());
        // No condition, or one asking nothing: shown bare.
        let mut t = parse_tier("pool:p", false).unwrap();
        t.when = Some(pb::TierCondition::default());
        assert_eq!(tier(&t), "pool:p");
    }
}
