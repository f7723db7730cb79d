//! Switchyard data plane: stateless inference workers.
//!
//! # Layout
//! A request's life, top-down:
//! - [`service`]: `switchyard.v1.Inference` (Generate, GenerateStream, ListModels).
//! - [`catalog`]: resolve a model name (route → pool → provider/model) to
//!   tiers of candidates, from the snapshot held in memory.
//! - [`select`]: order a pool's members by its strategy and the shared counter.
//! - [`failover`]: attempts, retries, failover before the first chunk,
//!   benching and the half-open probe.
//! - [`upstream`]: the wire formats (`openai`, `anthropic`, `mock`).
//! - [`health`]: counters and member health shared through Redis (or memory).
//! - [`sync`]: snapshot loading and change following, without Postgres.
//! - [`error`]: the one error type and its mapping to `tonic::Status`.
//! - [`server`] and [`config`]: wiring, flags, shutdown.

pub mod catalog;
pub mod config;
pub mod error;
pub mod failover;
pub mod health;
pub mod select;
pub mod server;
pub mod service;
pub mod sync;
pub mod upstream;
