//! Switchyard data plane: stateless inference workers.
//!
//! # Layout
//! A request's life, top-down, one stage per module:
//! - [`door`]: the OpenAI-compatible HTTP door, a door onto the call layer
//!   (`service::call`) as the gRPC service is; neither calls the other.
//! - [`service`]: the call layer every door shares (`call`: an `Ask` in, the
//!   neutral answer or a typed `DpError` out) and `switchyard.v1.Inference`
//!   on top of it (`grpc`; ListModels and the statistics answers beside it).
//! - [`intake`]: the request checked, field by field, into the neutral
//!   request model (`upstream::ChatRequest`, `EmbedRequest`).
//! - [`catalog`] (resolve): a model name (route → pool → provider/model) to
//!   tiers of candidates, from the snapshot held in memory.
//! - [`plan`]: a pool's members in the order to try them — strategy and the
//!   fleet's round-robin ticket, benched members left out, probes marked.
//! - [`attempt`]: one try of one member within the provider's timeouts.
//! - [`failover`]: the loop over the plan (retries, next member, next tier),
//!   keeping the record of what was tried (`tried`); [`admit`]: the wait
//!   for a concurrency slot when every member left is at its cap.
//! - [`respond`] and [`stream`]: the unary answer, and the stream pump that
//!   never ends OK without the upstream's finish.
//! - [`settle`]: what a served request is charged once its usage is known
//!   (its upper bound when the upstream reported none).
//!
//! Beside it:
//! - [`model`]: the types every stage shares (a leaf: no imports from the rest).
//! - [`fleet`]: what the fleet shares (health, tickets, limits, probes), held
//!   in memory and kept live from Redis (or memory in the embedded default).
//! - [`signals`]: live signals per member, fleet-wide — in flight (guards
//!   that cannot leak) and peak-EWMA latency, exchanged in the background.
//! - [`upstream`]: the neutral request and answer, and the wire formats
//!   (`openai`, `anthropic`, `mock`) that translate them.
//! - [`credentials`]: a provider's credential resolved within the allow-list, or why it is refused.
//! - [`targets`]: a provider's keys, and the runtime targets (`member~key`)
//!   a member turns into, each with its own health, limits and signals.
//! - [`features`]: what a request has (images, reasoning, tools, a long
//!   prompt) that a route tier's condition may ask for.
//! - [`sync`]: snapshot loading and change following, without Postgres.
//! - [`error`]: the one error type, its gRPC code by variant and its
//!   mapping to `tonic::Status` (the HTTP door maps it in `door::error`).
//! - [`observe`]: metrics, pool statistics and spans — it only records;
//!   [`gauges`]: what a scrape reads of the stages' state.
//! - [`server`]: a worker built from its settings (`Worker::build`: connect,
//!   load, bind) and run (`Worker::run`: serve until shutdown, drain), with
//!   every default in `server::defaults`; [`config`]: the flags.

pub mod access;
pub mod admit;
pub mod attempt;
pub mod callers;
pub mod catalog;
pub mod config;
pub mod credentials;
pub mod door;
pub mod error;
pub mod failover;
pub mod features;
pub mod fit;
pub mod fleet;
pub mod gauges;
pub mod intake;
pub mod model;
pub mod observe;
pub mod plan;
pub mod respond;
pub mod server;
pub mod service;
pub mod settle;
pub mod signals;
pub mod stream;
pub mod sync;
pub mod targets;
pub mod upstream;
