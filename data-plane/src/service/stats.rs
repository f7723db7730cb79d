//! The answers of `GetPoolStats` and `GetCallerStats`: the fleet's
//! statistics over a window (recorded by `observe`), joined with the config
//! (which pools, members and callers exist) and, for pools, the health this
//! worker holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1 as pb;
use tokio::time::Instant;
use tonic::Status;

use super::member_view::HealthView;
use crate::callers::Grant;
use crate::catalog::Catalog;
use crate::fleet::health::Entry;
use crate::model::Pool;
use crate::observe::stats::{MAX_WINDOW_SECS, PoolAgg, Recorder, Totals, Use};

/// The window asked for, in seconds: 60 to an hour, 0 for five minutes.
pub fn window(seconds: u32) -> Result<u32, Status> {
    match seconds {
        0 => Ok(300),
        w @ 60..=MAX_WINDOW_SECS => Ok(w),
        w => Err(Status::invalid_argument(format!(
            "window_seconds is {w}; use 60 to {MAX_WINDOW_SECS} (0 for 300)"
        ))),
    }
}

/// Failed over reached, 0 when nothing reached.
fn rate(failed: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let r = failed as f64 / of as f64;
        r
    }
}

/// One pool's statistics; its configured members first (in config order),
/// then any the window saw that the config no longer has.
pub fn pool(
    p: &Pool,
    agg: Option<&PoolAgg>,
    health: &HashMap<String, Entry>,
    now: Instant,
) -> pb::PoolStats {
    let empty = PoolAgg::default();
    let agg = agg.unwrap_or(&empty);
    let failed: u64 = agg.failures.values().sum();
    let mut members = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let member = |id: &str, c: Option<&Arc<crate::model::Candidate>>| {
        let m = agg.members.get(id).cloned().unwrap_or_default();
        let h = HealthView::of(health, id, p.policy.failure_threshold, now);
        let attempts = m.attempts();
        pb::MemberStats {
            member_id: id.to_owned(),
            provider: c.map(|c| c.provider.clone()).unwrap_or_default(),
            upstream_model: c.map(|c| c.upstream_model.clone()).unwrap_or_default(),
            attempts,
            served: m.served(),
            error_rate: rate(attempts - m.served().min(attempts), attempts),
            outcomes: m.outcomes.clone().into_iter().collect(),
            latency: Some(m.latency.percentiles()),
            input_tokens: m.input,
            output_tokens: m.output,
            state: h.state.label().to_owned(),
            consecutive_failures: h.fails,
            benched_until_ms: h.benched_until_ms,
        }
    };
    for c in &p.members {
        seen.insert(c.member_id.as_str());
        members.push(member(&c.member_id, Some(c)));
    }
    for id in agg.members.keys() {
        if !seen.contains(id.as_str()) {
            members.push(member(id, None));
        }
    }
    pb::PoolStats {
        pool: p.name.clone(),
        requests: agg.requests,
        failed,
        error_rate: rate(failed, agg.requests),
        failures: agg.failures.clone().into_iter().collect(),
        failovers: agg.failovers,
        latency: Some(agg.latency.percentiles()),
        ttft: Some(agg.ttft.percentiles()),
        input_tokens: agg.input,
        output_tokens: agg.output,
        members,
    }
}

/// Every configured pool (or the one named), in name order.
pub fn pools(
    configured: &[Arc<Pool>],
    totals: &Totals,
    health: &HashMap<String, Entry>,
    now: Instant,
) -> Vec<pb::PoolStats> {
    configured
        .iter()
        .map(|p| pool(p, totals.pools.get(&p.name), health, now))
        .collect()
}

/// Whose statistics a call let in with `grant` gets when it asks for
/// `asked` (empty: all it may see): one caller by name, or `None` for all.
/// A caller key sees only itself; the deprecated tokens and `--no-auth`
/// see everyone (as in ListModels, only a caller key is narrowed).
pub fn caller_scope(grant: Option<&Grant>, asked: &str) -> Result<Option<String>, Status> {
    match grant {
        Some(Grant::Caller(c)) if asked.is_empty() || asked == c.name => Ok(Some(c.name.clone())),
        Some(Grant::Caller(c)) => Err(Status::permission_denied(format!(
            "caller '{}' may see only its own statistics; leave caller empty or name '{}'",
            c.name, c.name
        ))),
        _ => Ok((!asked.is_empty()).then(|| asked.to_owned())),
    }
}

/// One caller's statistics: per model asked for, and their sum.
pub fn caller(name: &str, models: Option<&BTreeMap<String, Use>>) -> pb::CallerStats {
    let mut total = Use::default();
    let mut rows = Vec::new();
    for (model, u) in models.into_iter().flatten() {
        total.add(u);
        rows.push(pb::CallerModelStats {
            model: model.clone(),
            requests: u.requests,
            failed: u.failed(),
            input_tokens: u.input,
            output_tokens: u.output,
        });
    }
    pb::CallerStats {
        caller: name.to_owned(),
        requests: total.requests,
        failed: total.failed(),
        failures: total.failures.into_iter().collect(),
        input_tokens: total.input,
        output_tokens: total.output,
        models: rows,
    }
}

/// Every configured caller (also without traffic) and every other the
/// window saw, in name order; or only the one named.
pub fn callers<'a>(
    configured: impl IntoIterator<Item = &'a str>,
    totals: &BTreeMap<String, BTreeMap<String, Use>>,
    only: Option<&str>,
) -> Vec<pb::CallerStats> {
    let mut names: BTreeSet<&str> = configured.into_iter().collect();
    names.extend(totals.keys().map(String::as_str));
    if let Some(only) = only {
        names.retain(|n| *n == only);
    }
    names
        .into_iter()
        .map(|n| caller(n, totals.get(n)))
        .collect()
}

/// `GetCallerStats`, as a call let in with `grant` asks it.
pub async fn caller_stats(
    stats: &Recorder,
    catalog: &Catalog,
    grant: Option<&Grant>,
    r: &pb::GetCallerStatsRequest,
) -> Result<pb::GetCallerStatsResponse, Status> {
    let window = window(r.window_seconds)?;
    let only = caller_scope(grant, &r.caller)?;
    let (totals, from, to) = stats
        .read(Duration::from_secs(u64::from(window)))
        .await
        .map_err(|e| Status::unavailable(format!("caller statistics are unreachable: {e}")))?;
    let configured = catalog
        .callers
        .by_hash
        .values()
        .map(|(c, _)| c.name.as_str())
        .chain(catalog.callers.by_subject.values().map(|c| c.name.as_str()));
    let callers = callers(configured, &totals.callers, only.as_deref());
    if callers.is_empty()
        && let Some(name) = only
    {
        return Err(Status::not_found(format!(
            "no caller named '{}' is configured or called in the last {window} s",
            name.chars().take(128).collect::<String>()
        )));
    }
    Ok(pb::GetCallerStatsResponse {
        window_seconds: window,
        from_unix_ms: from.saturating_mul(1000),
        to_unix_ms: to.saturating_mul(1000),
        callers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callers::CallerEntry;
    use crate::model::Limits;

    fn grant(name: &str) -> Grant {
        Grant::Caller(Arc::new(CallerEntry {
            header: None,
            id: format!("id-{name}"),
            name: name.into(),
            enabled: true,
            all_models: true,
            models: std::collections::HashSet::new(),
            allow_direct: false,
            limits: Limits::default(),
            daily_budget: None,
            monthly_budget: None,
            expires_ms: 0,
        }))
    }

    fn used(requests: u64, failed: &[(&str, u64)], input: u64, output: u64) -> Use {
        Use {
            requests,
            failures: failed.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect(),
            input,
            output,
        }
    }

    #[test]
    fn a_caller_key_sees_only_itself_and_tokens_see_everyone() {
        let billing = grant("billing-svc");
        assert_eq!(
            caller_scope(Some(&billing), "").expect("own").as_deref(),
            Some("billing-svc")
        );
        assert_eq!(
            caller_scope(Some(&billing), "billing-svc")
                .expect("own")
                .as_deref(),
            Some("billing-svc")
        );
        let e = caller_scope(Some(&billing), "search-svc").expect_err("another's");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("only its own"), "{}", e.message());
        for g in [Some(&Grant::Token), Some(&Grant::Open), None] {
            assert_eq!(caller_scope(g, "").expect("all"), None);
            assert_eq!(
                caller_scope(g, "search-svc").expect("any").as_deref(),
                Some("search-svc")
            );
        }
        assert!(window(0).is_ok_and(|w| w == 300));
        assert!(window(59).is_err() && window(MAX_WINDOW_SECS + 1).is_err());
    }

    #[test]
    fn a_caller_adds_up_its_models_and_configured_callers_show_without_traffic() {
        let mut totals: BTreeMap<String, BTreeMap<String, Use>> = BTreeMap::new();
        let billing = totals.entry("billing-svc".into()).or_default();
        billing.insert("coding".into(), used(5, &[("unavailable", 1)], 50, 70));
        billing.insert(
            "secret-pool".into(),
            used(2, &[("permission_denied", 2)], 0, 0),
        );
        totals
            .entry("token".into())
            .or_default()
            .insert("coding".into(), used(1, &[], 3, 4));
        let all = callers(["search-svc", "billing-svc"], &totals, None);
        let names: Vec<&str> = all.iter().map(|c| c.caller.as_str()).collect();
        assert_eq!(names, ["billing-svc", "search-svc", "token"]);
        let b = &all[0];
        assert_eq!(
            (b.requests, b.failed, b.input_tokens, b.output_tokens),
            (7, 3, 50, 70)
        );
        assert_eq!(b.failures.get("permission_denied"), Some(&2));
        assert_eq!(b.failures.get("unavailable"), Some(&1));
        let models: Vec<(&str, u64, u64)> = b
            .models
            .iter()
            .map(|m| (m.model.as_str(), m.requests, m.failed))
            .collect();
        assert_eq!(models, [("coding", 5, 1), ("secret-pool", 2, 2)]);
        let idle = &all[1];
        assert_eq!((idle.requests, idle.models.len()), (0, 0));
        let one = callers(["search-svc", "billing-svc"], &totals, Some("token"));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].input_tokens, 3);
        assert!(callers(["search-svc"], &totals, Some("nobody")).is_empty());
    }
}
