//! The request's run across members: the state it carries from one member
//! to the next, and what one member's try came to.

use std::sync::Arc;

use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use super::tried::Log;
use crate::error::DpError;
use crate::fleet::slots::Place;
use crate::observe::Operation;
use crate::observe::trace::Incoming;
use crate::plan::Step;
use crate::upstream::{ErrorClass, Prepared};

/// What one member did for the request.
pub(super) enum Outcome<T> {
    Served(T),
    /// Try the next member.
    Next,
    /// Stop: the request fails with this.
    Stop(DpError),
    /// Stop trying: the retry budget is spent.
    GiveUp,
    /// Stop trying: the attempt cap is reached.
    Cap,
    /// The member is at its concurrency cap: try it again when a slot frees.
    Busy(Step, Arc<Prepared>),
}

/// The request's running state across members.
pub(super) struct Run<'a> {
    pub(super) operation: Operation,
    pub(super) model: &'a str,
    pub(super) deadline: Option<Instant>,
    pub(super) budget: u32,
    /// The pool of the request's first attempt (its retries spend that
    /// pool's budget, which its first attempts feed), once there was one.
    pub(super) first_pool: Option<&'a str>,
    /// The last member moved on with no fault (model unknown there, prompt
    /// too long for it, its account declined, misconfigured): the next try
    /// is free of the retry budget and the attempt cap.
    pub(super) free_hop: bool,
    /// The request's token estimate (reserved from limited members).
    pub(super) estimate: u64,
    /// What the serving member's reservation took.
    pub(super) reserved: u64,
    /// Members skipped as too slow for the time left.
    pub(super) slow_skips: u32,
    /// The last member said the prompt is too long for it: larger windows next.
    pub(super) too_long: bool,
    /// This request's place in a pool's admission queue, while it waits.
    pub(super) place: Option<Place>,
    /// Members found at their cap are recorded once, not at every retry.
    pub(super) busy_seen: bool,
    pub(super) log: Log,
    /// The caller's trace context, continued by each attempt.
    pub(super) trace: &'a Incoming,
}

/// The attempt outcome callers see for a class (`x-switchyard-attempts`, metrics).
pub(super) fn outcome_of(class: ErrorClass) -> pb::AttemptOutcome {
    match class {
        ErrorClass::Transient => pb::AttemptOutcome::Transient,
        ErrorClass::RateLimited => pb::AttemptOutcome::RateLimited,
        ErrorClass::AuthBilling(_) | ErrorClass::Declined(_) => pb::AttemptOutcome::Auth,
        ErrorClass::ModelNotFound => pb::AttemptOutcome::ModelNotFound,
        ErrorClass::ContextTooLong => pb::AttemptOutcome::ContextTooLong,
        ErrorClass::Permanent(_) | ErrorClass::Misconfigured => pb::AttemptOutcome::Permanent,
        ErrorClass::Unsupported => pb::AttemptOutcome::Unsupported,
    }
}
