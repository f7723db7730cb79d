//! Switchyard control plane: the source of truth for providers, pools,
//! members and routes, and the publisher of every change.
//!
//! # Layout
//! A call's life, top-down:
//! - [`auth`]: bearer-token filter in front of every service.
//! - [`service`]: the `switchyard.v1.ControlPlane` handlers (thin).
//! - [`store`]: validation-then-write in one transaction per RPC; every write
//!   bumps the global revision and appends to the outbox
//!   ([`validate`] holds the field rules, [`entity`] the tables).
//! - [`publish`]: drains the outbox to Redis (or the in-process bus).
//! - [`feed`]: the live change feed behind `WatchChanges`.
//! - [`error`]: the one error type and its mapping to `tonic::Status`.
//! - [`server`] and [`config`]: wiring, flags, shutdown.

/// Bearer-token access (shared with the data plane).
pub use switchyard_shared::auth;
pub mod config;
pub mod entity;
pub mod error;
pub mod feed;
pub mod metrics;
pub mod publish;
pub mod server;
pub mod service;
pub mod store;
pub mod validate;
