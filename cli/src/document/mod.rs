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
    /// More keys of the same provider, each its own runtime target (own
    /// health, limits and headroom). `credential` above is the key named
    /// `default`. The list replaces the stored one on apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ProviderKey>,
}

/// One named key of a provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderKey {
    /// Unique per provider; same characters as provider names; not `default`.
    pub name: String,
    /// `env:NAME` or `file:/path`, like the provider's credential. Left out:
    /// keep the stored key of this name (an inline secret set with
    /// UpdateProvider stays; a new key needs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(env:|file:).+"))]
    pub credential: Option<String>,
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
    /// Requests in flight at once, fleet-wide (1-100000). When every member
    /// is at its cap, a request waits in a bounded queue within its deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// The model's context window in tokens (1-10000000): a request whose
    /// estimated prompt + max output exceeds it skips the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
    /// Use only this key of the provider (`default` or one of its `keys`).
    /// Left out: every key, each its own target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
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
    /// Take only requests with every feature named here; others fall
    /// through to the next tier. Left out (or empty): every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
}

/// What a request must have for a tier to take it. A field left out asks nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Image or document parts in any message.
    #[serde(default, skip_serializing_if = "is_false")]
    pub images: bool,
    /// Reasoning (effort or budget) asked for.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reasoning: bool,
    /// Tools offered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tools: bool,
    /// Estimated prompt tokens at least this many (0-10000000).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub min_prompt_tokens: u64,
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
fn is_zero_u64(n: &u64) -> bool {
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
mod tests;
