//! Pieces every Switchyard server shares.
//!
//! # Layout
//! - [`telemetry`]: tracing subscriber (text or JSON logs) plus an optional
//!   OpenTelemetry OTLP exporter, flushed last on shutdown.
//! - [`shutdown`]: the one shutdown signal (SIGTERM or Ctrl-C).
//! - [`seal`]: the master key and AEAD sealing of inline credentials.
//! - [`credential_ref`]: which credential references may be resolved (env prefix, secrets folder).
//! - [`signed_snapshot`]: the config snapshot in Redis, signed under the master key.
//! - [`args`]: flags both servers share (telemetry, Redis, master key).
//! - [`auth`]: bearer-token filter (admin, reader) in front of every gRPC service.
//! - [`change`]: the JSON change message on the changes channel.
//! - [`grpc`]: status fix-ups every server applies.
//! - [`keys`]: the Redis key and channel layout under a configurable prefix.
//! - [`redis_client`]: Redis clients with TCP_NODELAY.
//! - [`tls`]: TLS and mTLS on the servers' ports, certificates reloaded from disk.

// Linked only for its TLS feature (see Cargo.toml).
use reqwest_otlp as _;

pub mod args;
pub mod auth;
pub mod caller_key;
pub mod change;
pub mod credential_ref;
pub mod grpc;
pub mod keys;
pub mod metrics;
pub mod redis_client;
pub mod seal;
pub mod shutdown;
pub mod signed_snapshot;
pub mod telemetry;
pub mod tls;
