//! The config file `switchyard apply` reads and `switchyard export` writes:
//! providers, pools with their members, and routes, by name. Defaults are
//! left out when writing, so an exported file holds only what was chosen,
//! sorted, and diffs well in git. The JSON Schema (`switchyard schema`,
//! docs/config.schema.json) is generated from these same types.

mod convert;
mod lines;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use lines::parse;

/// The format's version tag.
pub const VERSION: &str = "switchyard/v1";

/// A whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Format version: `switchyard/v1`.
    pub version: String,
    /// Upstream endpoints and how to authenticate to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
    /// Virtual model names served by members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<Pool>,
    /// Virtual model names over ordered tiers of pools or direct models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Any OpenAI-compatible /v1/chat/completions API.
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
    /// An in-process fake for demos and tests.
    Mock,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Unique; 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit.
    pub name: String,
    pub kind: Kind,
    /// http(s)://host[:port][/path]; required unless kind is mock.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_url: String,
    /// Where the data plane finds the key: `env:NAME` (NAME under the
    /// workers' --credential-env-prefix, SWITCHYARD_CRED_ by default) or
    /// `file:/path` (inside their --credential-dir). Never the key itself. Left out: keep what the server has (an inline
    /// secret set with UpdateProvider stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(env:|file:).+"))]
    pub credential: Option<String>,
    /// Extra request headers sent upstream (not secret: they are shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_headers: BTreeMap<String, String>,
    /// Upstream timeouts in milliseconds; left out = server defaults.
    #[serde(default, skip_serializing_if = "Timeouts::is_default")]
    pub timeouts: Timeouts,
    /// Disabled providers give no candidates.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP/TLS connect (default 5000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connect_ms: u32,
    /// Time to the first response byte (default 30000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_byte_ms: u32,
    /// Whole request (default 600000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub request_ms: u32,
}

impl Timeouts {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    RoundRobin,
    Weighted,
    Priority,
    Random,
    LeastBusy,
    Latency,
    QuotaAware,
}

impl Strategy {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Unique across pools and routes: the model name callers use.
    pub name: String,
    #[serde(default, skip_serializing_if = "Strategy::is_default")]
    pub strategy: Strategy,
    /// Left out: 1 retry, bench after 3 failures, cooldown 1 s doubling to 5 min.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Whether callers may send `extra_json` (fields merged into the
    /// upstream request body) to this pool's members (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub allow_request_extra: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
}

/// How a pool treats failures. A field left out takes its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Failover {
    /// Retries on the same member after a transient failure (0-10; default 1).
    #[serde(default = "default_retries")]
    pub transient_retries: u32,
    /// Consecutive transient failures that bench a member (1-100; default 3).
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// First cooldown of a benched member (100 ms - 1 h; default 1000).
    #[serde(default = "default_cooldown_base")]
    pub cooldown_base_ms: u32,
    /// Cooldown cap (default 300000).
    #[serde(default = "default_cooldown_max")]
    pub cooldown_max_ms: u32,
    /// Move on after permanent upstream errors (400, 401, 403, 422) too.
    #[serde(default)]
    pub advance_on_permanent: bool,
}

pub const DEFAULT_FAILOVER: Failover = Failover {
    transient_retries: 1,
    failure_threshold: 3,
    cooldown_base_ms: 1_000,
    cooldown_max_ms: 300_000,
    advance_on_permanent: false,
};

fn default_retries() -> u32 {
    DEFAULT_FAILOVER.transient_retries
}
fn default_threshold() -> u32 {
    DEFAULT_FAILOVER.failure_threshold
}
fn default_cooldown_base() -> u32 {
    DEFAULT_FAILOVER.cooldown_base_ms
}
fn default_cooldown_max() -> u32 {
    DEFAULT_FAILOVER.cooldown_max_ms
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    Inactive,
    /// Gets no new requests; in-flight ones finish.
    Draining,
}

impl Status {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One candidate of a pool: a provider and the model id it knows.
/// Identified by (pool, provider, model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Provider name.
    pub provider: String,
    /// The model id the upstream knows, e.g. gpt-4o-mini.
    pub model: String,
    /// 1-10000 (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
    /// Higher goes first under the priority strategy (-1000..1000).
    #[serde(default, skip_serializing_if = "is_zero_i")]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Status::is_default")]
    pub status: Status,
    /// Requests per minute, fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute, fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    /// max_tokens for requests that set none (1-1000000). Anthropic needs
    /// one: without either, 4096 is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique across pools and routes: the model name callers use.
    pub name: String,
    /// 1-16 tiers, tried in order.
    pub tiers: Vec<Tier>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// One tier: a pool, or a direct `provider/model`. Exactly one of the two.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// `provider-name/upstream-model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<String>,
    /// Tried only after every primary tier.
    #[serde(default, skip_serializing_if = "is_false")]
    pub backup: bool,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_true(b: &bool) -> bool {
    *b
}
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_one(n: &u32) -> bool {
    *n == 1
}
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero_i(n: &i32) -> bool {
    *n == 0
}

impl Document {
    /// The file text: YAML with a header comment, stable order.
    pub fn to_yaml(&self) -> anyhow::Result<String> {
        let body = serde_saphyr::to_string(self)?;
        Ok(format!(
            "# Switchyard config: `switchyard apply -f` this file (docs/config.md).\n{body}"
        ))
    }

    /// Sorts everything by name (members by provider, then model), so two
    /// exports of the same config are byte-identical.
    pub fn sort(&mut self) {
        self.providers.sort_by(|a, b| a.name.cmp(&b.name));
        self.pools.sort_by(|a, b| a.name.cmp(&b.name));
        for p in &mut self.pools {
            p.members
                .sort_by(|a, b| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)));
        }
        self.routes.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

/// The JSON Schema of the file, for editors and CI.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Document)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
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
}
