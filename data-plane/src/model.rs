//! The model types every stage shares: members ready to call, pools,
//! routes, strategies and failover policies. A leaf: it imports nothing of
//! the rest of the data plane but the upstream target and tier conditions.

use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1 as pb;

use crate::features::Condition;
use crate::upstream::Endpoint;

/// Selection strategy of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    Weighted,
    Priority,
    Random,
    /// Fewest fleet in-flight relative to weight; ties by rotation.
    LeastBusy,
    /// Power of two choices over peak-EWMA latency × (in flight + 1).
    Latency,
    /// Most remaining rpm/tpm headroom first.
    QuotaAware,
}

/// How a pool fails over (docs/adr/004-failover-and-health.md).
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub transient_retries: u32,
    pub failure_threshold: u32,
    pub cooldown_base: Duration,
    pub cooldown_max: Duration,
    pub advance_on_permanent: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            transient_retries: 1,
            failure_threshold: 3,
            cooldown_base: Duration::from_secs(1),
            cooldown_max: Duration::from_secs(300),
            advance_on_permanent: false,
        }
    }
}

/// Requests and tokens per minute a member may take, fleet-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }
}

/// One member, ready to call.
#[derive(Debug)]
pub struct Candidate {
    pub member_id: String,
    pub provider: String,
    pub upstream_model: String,
    pub weight: u32,
    pub priority: i32,
    pub status: pb::MemberStatus,
    pub limits: Limits,
    /// Requests in flight at once, fleet-wide.
    pub max_concurrency: Option<u32>,
    /// The model's context window, tokens.
    pub context_tokens: Option<u64>,
    /// The provider key this target uses ("default": the provider's
    /// `credential`). With named keys, `member_id` is `member~key`: the
    /// target's own health, limits, headroom and in-flight count.
    pub key: String,
    pub target: Endpoint,
    /// A direct `provider/model` call to a model no member serves: its name
    /// is the caller's choice, so it creates no state that outlives the
    /// request (no health reports, no benches; its retry budget is the
    /// provider's).
    pub ephemeral: bool,
}

impl Candidate {
    /// `provider/model (member id)`, for error messages.
    pub fn label(&self) -> String {
        format!(
            "{}/{} (member {})",
            self.provider, self.upstream_model, self.member_id
        )
    }
}

/// What the plan reads of one member's live signals, fleet-wide (see
/// docs/adr/005-live-signals.md). `None`: no data yet.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Live {
    /// Requests in flight: this worker's live attempts plus every other
    /// worker's last report.
    pub in_flight: u32,
    /// Peak-EWMA time to first byte/token.
    pub ttft: Option<Duration>,
    /// Peak-EWMA total latency.
    pub latency: Option<Duration>,
    /// Recent 90th percentile of time to first byte/token (deadline-aware
    /// attempts skip a member whose p90 exceeds the caller's time left).
    pub ttft_p90: Option<Duration>,
    /// Recent 90th percentile of whole unary answers, this worker's own
    /// (what a unary caller's deadline is held against).
    pub answer_p90: Option<Duration>,
    /// Requests and tokens left this minute (the least of the member's own
    /// limit and the provider's rate-limit headers).
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
}

/// A pool (or a direct provider/model) with its members.
#[derive(Debug)]
pub struct Pool {
    /// Pool name, or `provider/model` for a direct target.
    pub name: String,
    /// Key of the shared round-robin counter.
    pub id: String,
    pub strategy: Strategy,
    pub policy: Policy,
    pub enabled: bool,
    /// Every member, for ListModels.
    pub members: Vec<Arc<Candidate>>,
    /// Members that may get new requests: active, provider enabled.
    pub active: Vec<Arc<Candidate>>,
    /// Weighted strategy: one cycle of picks over `active` (see `plan`).
    pub sequence: Vec<u32>,
}

impl Pool {
    /// Whether requests take a shared round-robin ticket: a pool of one, or a
    /// random one, needs none. (A direct provider/model over several keys
    /// takes them under an id the configuration bounds, never the model name
    /// a caller picks: see `Catalog::direct`.)
    pub fn takes_tickets(&self) -> bool {
        self.strategy != Strategy::Random && self.active.len() > 1
    }
}

/// One tier of a route.
#[derive(Debug)]
pub struct Tier {
    /// Its place in the route as configured (0-based; a tier this worker
    /// cannot serve is left out, the others keep their number).
    pub index: u32,
    pub pool: Arc<Pool>,
    pub backup: bool,
    /// What a request must have for this tier to take it.
    pub when: Condition,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub enabled: bool,
    /// In configured order.
    pub tiers: Vec<Tier>,
}

/// What a model name resolves to for one request: the tiers that take it,
/// primaries first, each with its index in the route (0 for a pool).
#[derive(Debug)]
pub struct Resolved {
    pub model: String,
    pub tiers: Vec<(u32, Arc<Pool>)>,
}

/// Whether an attempt of this outcome reached an upstream.
pub fn reached(outcome: i32) -> bool {
    [
        pb::AttemptOutcome::Ok,
        pb::AttemptOutcome::Transient,
        pb::AttemptOutcome::Permanent,
        pb::AttemptOutcome::ModelNotFound,
        pb::AttemptOutcome::RateLimited,
        pb::AttemptOutcome::Auth,
        pb::AttemptOutcome::ContextTooLong,
    ]
    .iter()
    .any(|o| *o as i32 == outcome)
}

/// The label value of an attempt outcome: its enum name, lowercased, without the prefix.
pub fn outcome_name(outcome: i32) -> &'static str {
    use pb::AttemptOutcome as O;
    match O::try_from(outcome) {
        Ok(O::Ok) => "ok",
        Ok(O::Transient) => "transient",
        Ok(O::Permanent) => "permanent",
        Ok(O::ModelNotFound) => "model_not_found",
        Ok(O::SkippedBenched) => "skipped_benched",
        Ok(O::Deadline) => "deadline",
        Ok(O::SkippedQuota) => "skipped_quota",
        Ok(O::RateLimited) => "rate_limited",
        Ok(O::Auth) => "auth",
        Ok(O::ContextTooLong) => "context_too_long",
        Ok(O::BudgetRefused) => "budget_refused",
        Ok(O::Unsupported) => "unsupported",
        Ok(O::SkippedContext) => "skipped_context",
        Ok(O::SkippedSlow) => "skipped_slow",
        Ok(O::SkippedBusy) => "skipped_busy",
        Ok(O::SkippedNearLimit) => "skipped_near_limit",
        Ok(O::Unspecified) | Err(_) => "unspecified",
    }
}

/// Whether a pool name (as attempts and answers carry it) is a direct
/// `provider/model` call rather than a configured pool: configured names
/// never hold a '/', and a direct call's names are the caller's choice.
pub fn is_direct(pool: &str) -> bool {
    pool.contains('/')
}

#[cfg(test)]
impl Candidate {
    /// A test member `id` on a mock target: weight 1, no limits, no cap,
    /// no window; tests change what they need.
    pub fn for_test(id: &str) -> Self {
        use crate::upstream::{Kind, Target, Timeouts};
        Self {
            member_id: id.into(),
            provider: "p".into(),
            upstream_model: "x".into(),
            weight: 1,
            priority: 0,
            status: pb::MemberStatus::Active,
            limits: Limits::default(),
            max_concurrency: None,
            context_tokens: None,
            key: "default".into(),
            ephemeral: false,
            target: Endpoint::new(Target {
                kind: Kind::Mock,
                base_url: String::new(),
                model: "x".into(),
                credential: None,
                extra_headers: vec![],
                timeouts: Timeouts {
                    connect: Duration::from_secs(1),
                    first_byte: Duration::from_secs(1),
                    total: Duration::from_secs(1),
                },
                default_max_tokens: None,
                allow_extra: true,
            }),
        }
    }
}
