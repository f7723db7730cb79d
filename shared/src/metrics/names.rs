//! Every metric name and label key both servers export, in one place: the
//! OpenTelemetry GenAI semantic conventions are still moving, so a rename
//! happens here and nowhere else.
//!
//! Names are registered without the `_total` suffix of counters (the
//! exposition adds it); units are part of the name. Label keys are the
//! field names of the label sets at the end of this module.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

// ---- OpenTelemetry GenAI semantic conventions, in Prometheus form ----

/// `gen_ai.server.request.duration`: one inference RPC, end to end (a
/// stream until its last event), by the virtual model asked for.
pub const GENAI_SERVER_REQUEST_DURATION: &str = "gen_ai_server_request_duration_seconds";
/// `gen_ai.server.time_to_first_token`: a streaming RPC, until its first
/// content chunk is handed to the caller.
pub const GENAI_SERVER_TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token_seconds";
/// `gen_ai.client.operation.duration`: one attempt at an upstream.
pub const GENAI_CLIENT_OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
/// `gen_ai.client.token.usage`: tokens of a served request, by type.
pub const GENAI_CLIENT_TOKEN_USAGE: &str = "gen_ai_client_token_usage";

/// `gen_ai.operation.name` of every inference RPC and attempt.
pub const OPERATION_CHAT: &str = "chat";
/// `gen_ai.operation.name` of embedding requests.
pub const OPERATION_EMBEDDINGS: &str = "embeddings";

// ---- Data plane: the router ----

/// Inference RPCs by virtual model (capped) and final gRPC status.
pub const REQUESTS: &str = "switchyard_requests";
/// Inference RPCs by caller (the caller's name; `anonymous` without auth) and final status.
pub const CALLER_REQUESTS: &str = "switchyard_caller_requests";
/// Tokens of served requests by caller and type.
pub const CALLER_TOKENS: &str = "switchyard_caller_tokens";
/// Calls refused for a missing, malformed, unknown or revoked key.
pub const AUTH_FAILURES: &str = "switchyard_auth_failures";
/// Attempts by pool, member and outcome (skips included).
pub const ATTEMPTS: &str = "switchyard_attempts";
/// A request moving on from a member that did not serve to the next one.
pub const FAILOVERS: &str = "switchyard_failovers";
/// 1 for the state each member is in (available, benched, probing), 0 for the others.
pub const MEMBER_STATE: &str = "switchyard_member_state";
/// Requests and tokens a member's provider key has left, as its rate-limit
/// headers last said (no series while unknown or past the reset).
pub const MEMBER_REMAINING_REQUESTS: &str = "switchyard_member_remaining_requests";
pub const MEMBER_REMAINING_TOKENS: &str = "switchyard_member_remaining_tokens";
/// Members this worker benched (a failure over the threshold, a 429, an auth refusal).
pub const MEMBER_BENCHES: &str = "switchyard_member_benches";
/// Served answers (streams and unary) that reported no usage, by pool and
/// member: each was charged its upper bound (prompt estimate + the member's
/// effective max output) against limits and budgets.
pub const USAGE_MISSING: &str = "switchyard_usage_missing";
/// Probes of benched members this worker made, by result.
pub const PROBES: &str = "switchyard_probes";
/// Requests waiting in a pool's admission queue on this worker (every
/// member they may try is at its concurrency cap), read at scrape time.
pub const ADMISSION_QUEUE: &str = "switchyard_admission_queue_length";
/// Requests that joined their pool's admission queue.
pub const ADMISSIONS_WAITED: &str = "switchyard_admissions_waited";
/// Requests refused a concurrency slot (queue full, or no slot within their deadline).
pub const ADMISSIONS_REFUSED: &str = "switchyard_admissions_refused";
/// Inference RPCs in flight on this worker (streams until their last event).
pub const INFLIGHT: &str = "switchyard_inflight_requests";
/// Attempts and committed streams in flight per member on this worker.
pub const MEMBER_INFLIGHT: &str = "switchyard_member_inflight_requests";
/// Requests in flight per member, fleet-wide (this worker's plus the
/// others' last reports), read at scrape time.
pub const MEMBER_IN_FLIGHT: &str = "switchyard_member_in_flight";
/// A member's peak-EWMA time to first token, fleet-wide, seconds.
pub const MEMBER_TTFT: &str = "switchyard_member_ttft_seconds";
/// A member's peak-EWMA total latency, fleet-wide, seconds.
pub const MEMBER_LATENCY: &str = "switchyard_member_latency_seconds";
/// The config revision this worker serves.
pub const CONFIG_REVISION: &str = "switchyard_config_revision";
/// Seconds since this worker applied its last config change.
pub const CONFIG_AGE: &str = "switchyard_config_age_seconds";
/// 1 while the worker's config follows the store, 0 while it is stale or not loaded.
pub const CONFIG_LIVE: &str = "switchyard_config_live";
/// Stored config snapshots this worker refused (a signature that does not
/// verify, an unsigned or undecodable snapshot), by reason; it kept its last good config.
pub const CONFIG_REJECTED: &str = "switchyard_config_rejected";
/// Providers of the served config this worker refuses (a credential
/// reference outside the allow-list, one that resolves to nothing, an
/// inline credential it cannot open, an unknown kind), by reason.
pub const CONFIG_REFUSED_PROVIDERS: &str = "switchyard_config_refused_providers";
/// 1 while the fleet's shared state (Redis) is reachable, 0 while degraded.
pub const FLEET_UP: &str = "switchyard_fleet_state_up";
/// Keys (a member's or caller's minute, a caller's budget) with token
/// charges this worker has not sent to the fleet's state yet (Redis away).
pub const FLEET_CHARGES_PENDING: &str = "switchyard_fleet_charges_pending";
/// Leased rpm/tpm permits this worker holds and has not used yet (its
/// blocks of limited members' and callers' windows), requests and tokens.
pub const FLEET_PERMITS_HELD_REQUESTS: &str = "switchyard_fleet_permits_held_requests";
pub const FLEET_PERMITS_HELD_TOKENS: &str = "switchyard_fleet_permits_held_tokens";
/// Tokens of callers' daily/monthly budgets this worker leased and has not used.
pub const FLEET_PERMITS_HELD_BUDGET_TOKENS: &str = "switchyard_fleet_permits_held_budget_tokens";
/// Token charges given up, by reason: `full` (past the bound of pending
/// keys) or `expired` (their minute left the rpm/tpm window before Redis returned).
pub const FLEET_CHARGES_DROPPED: &str = "switchyard_fleet_charges_dropped";
/// Redis calls of the fleet state, by operation and result.
pub const REDIS_CALL_DURATION: &str = "switchyard_redis_call_duration_seconds";
/// Pool statistics flushed into the fleet's store, and flushes that failed.
pub const STATS_FLUSHES: &str = "switchyard_stats_flushes";
/// HTTP door connections closed by the worker (over the cap, a request head
/// too slow, idle too long), by reason.
pub const HTTP_CONNECTIONS_CLOSED: &str = "switchyard_http_connections_closed";
/// HTTP door connections open now.
pub const HTTP_CONNECTIONS_OPEN: &str = "switchyard_http_connections_open";

// ---- Both servers: TLS on the gRPC port ----

/// TLS handshakes that failed or timed out.
pub const TLS_HANDSHAKE_FAILURES: &str = "switchyard_tls_handshake_failures";
/// Certificate and key files that changed on disk, by result.
pub const TLS_CERT_RELOADS: &str = "switchyard_tls_certificate_reloads";
/// When the served certificate expires, in Unix seconds.
pub const TLS_CERT_EXPIRY: &str = "switchyard_tls_certificate_expiry_timestamp_seconds";

// ---- Control plane ----

/// Writes (create, update, delete) by resource and result.
pub const CP_WRITES: &str = "switchyard_control_plane_writes";
/// The last committed config revision.
pub const CP_REVISION: &str = "switchyard_control_plane_revision";
/// Committed changes not yet published to Redis.
pub const CP_OUTBOX_BACKLOG: &str = "switchyard_control_plane_outbox_backlog";
/// From a change's commit to its publication on Redis.
pub const CP_PUBLISH_LAG: &str = "switchyard_control_plane_publish_lag_seconds";
/// Publication attempts by result.
pub const CP_PUBLISHES: &str = "switchyard_control_plane_publishes";

// ---- Label sets: their field names are the label keys ----

/// GenAI labels of a server-side inference RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerCall {
    pub gen_ai_operation_name: &'static str,
    /// The virtual model asked for (capped: see `LabelCap`).
    pub gen_ai_request_model: String,
    /// The upstream model that served (empty when none did).
    pub gen_ai_response_model: String,
    /// The gRPC status of a failed call (empty on success).
    pub error_type: &'static str,
}

/// GenAI labels of one attempt at an upstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientCall {
    pub gen_ai_operation_name: &'static str,
    /// The provider's name in Switchyard (an operator's name, e.g.
    /// `openai-main`: the same vendor may be configured several times).
    pub gen_ai_provider_name: String,
    /// The member's upstream model.
    pub gen_ai_request_model: String,
    pub gen_ai_response_model: String,
    /// The attempt's outcome when it failed (empty on success).
    pub error_type: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TokenType {
    input,
    output,
}

/// GenAI labels of a served request's tokens.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Tokens {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: String,
    pub gen_ai_request_model: String,
    pub gen_ai_response_model: String,
    pub gen_ai_token_type: TokenType,
    /// The pool that served.
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Request {
    /// The virtual model asked for (capped).
    pub model: String,
    /// The final gRPC status, e.g. `ok`, `unavailable`.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Attempt {
    pub pool: String,
    pub member: String,
    /// ok, transient, rate_limited, auth, model_not_found, context_too_long,
    /// permanent, skipped_benched, skipped_quota, deadline, budget_refused, cancelled.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Member {
    pub pool: String,
    pub member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberResult {
    pub pool: String,
    pub member: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Pool {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisCall {
    pub op: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub result: &'static str,
}

/// Why something was refused, closed or dropped (a config, a provider, a
/// connection, a charge).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Write {
    pub resource: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberState {
    pub pool: String,
    pub member: String,
    /// available, benched or probing.
    pub state: &'static str,
}

/// A caller's requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerRequest {
    pub caller: String,
    pub status: &'static str,
}

/// A caller's tokens.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerTokens {
    pub caller: String,
    pub gen_ai_token_type: TokenType,
}
