//! `switchyard describe pool|route|provider|caller NAME`: one resource as a
//! readable block, with what it is tied to (a pool's members, a route's
//! tiers resolved to members, the pools and routes using a provider) and,
//! from a data-plane worker, members' health and recent traffic.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use switchyard_proto::v1 as pb;

use super::client::{ConnArgs, Cp, get, refused};
use super::get::{
    ROUTING_COLUMNS, any_routing, health, list_members, list_routes, live_cells, routing_cells,
    targets,
};
use super::output::{self, Table, dash, field, on, stamps};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum What {
    Pool,
    Route,
    Provider,
    Caller,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  switchyard describe pool demo\n  \
                        switchyard describe pool demo --window 3600   # traffic of the last hour\n  \
                        switchyard describe route chat\n  \
                        switchyard describe provider openai\n  \
                        switchyard describe caller billing")]
pub struct DescribeArgs {
    #[arg(value_enum)]
    pub what: What,
    /// Name or id.
    pub name: String,
    /// Pools: how many seconds of traffic to show (60-3600).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(60..=3600))]
    pub window: u32,
}

/// What a data-plane worker said, or why it said nothing.
struct Live {
    health: HashMap<String, pb::MemberHealth>,
    stats: HashMap<String, pb::MemberStats>,
    pool: Option<pb::PoolStats>,
    /// Why the worker told nothing (unreachable, refused, slow).
    silent: Option<String>,
}

impl Live {
    async fn read(conn: &ConnArgs, pool: Option<&str>, window: u32) -> Self {
        let health = match health(conn).await {
            Ok(h) => h,
            Err(e) => {
                return Self {
                    health: HashMap::new(),
                    stats: HashMap::new(),
                    pool: None,
                    silent: Some(format!("{e:#}")),
                };
            }
        };
        let mut live = Self {
            health,
            stats: HashMap::new(),
            pool: None,
            silent: None,
        };
        if let Some(pool) = pool
            && let Ok(mut dp) = conn.inference().await
        {
            let req = pb::GetPoolStatsRequest {
                pool: pool.into(),
                window_seconds: window,
            };
            // A pool the worker has not loaded yet has no traffic to show.
            if let Ok(r) = dp.get_pool_stats(req).await {
                live.pool = r.into_inner().pools.into_iter().find(|p| p.pool == pool);
                if let Some(p) = &live.pool {
                    for m in &p.members {
                        live.stats.insert(m.member_id.clone(), m.clone());
                    }
                }
            }
        }
        live
    }

    fn note(&self, out: &mut String) {
        if let Some(why) = &self.silent {
            let _ = writeln!(out, "Data plane:   health and traffic not shown: {why}");
        }
    }
}

fn indent(out: &mut String, text: &str, by: usize) {
    for line in text.lines() {
        let _ = writeln!(out, "{:by$}{line}", "");
    }
}

fn ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}ms")
    } else {
        format!("{v:.1}ms")
    }
}

fn percentiles(p: Option<&pb::Percentiles>) -> (String, String) {
    match p.filter(|p| p.count > 0) {
        Some(p) => (ms(p.p50_ms), ms(p.p95_ms)),
        None => ("-".into(), "-".into()),
    }
}

/// Requests and tokens the member's provider key has left (its rate-limit
/// headers, as the worker's fleet copy has them); `-` where unknown.
fn remaining(h: Option<&pb::MemberHealth>) -> String {
    let show = |n: i64, unit: &str| {
        if n < 0 {
            "-".to_owned()
        } else {
            format!("{n} {unit}")
        }
    };
    match h {
        Some(h) if h.remaining_requests >= 0 || h.remaining_tokens >= 0 => format!(
            "{} / {}{}",
            show(h.remaining_requests, "req"),
            show(h.remaining_tokens, "tok"),
            if h.near_limit { " (near limit)" } else { "" }
        ),
        _ => "-".into(),
    }
}

/// Members with their health and (when `traffic`) recent attempts.
fn members_block(ms: &[pb::Member], live: &Live, traffic: bool) -> String {
    let mut cols = vec![
        "ID",
        "PROVIDER",
        "MODEL",
        "WEIGHT",
        "PRIORITY",
        "STATUS",
        "HEALTH",
        "IN_FLIGHT",
        "TTFT",
        "LATENCY",
    ];
    let routing = any_routing(ms);
    if routing {
        cols.extend(ROUTING_COLUMNS);
    }
    if traffic {
        cols.extend(["ATTEMPTS", "ERRORS", "P50", "P95"]);
    }
    cols.push("REMAINING");
    let now = output::now_ms();
    let mut t = Table::new(&cols);
    for m in ms {
        for (id, h) in targets(&live.health, &m.id) {
            let mut row = vec![
                id.clone(),
                m.provider_name.clone(),
                m.upstream_model.clone(),
                m.weight.to_string(),
                m.priority.to_string(),
                output::status_upper(m.status),
                output::health(h, now),
            ];
            row.extend(live_cells(h));
            if routing {
                row.extend(routing_cells(m));
            }
            if traffic {
                match live.stats.get(&id) {
                    Some(s) => {
                        let (p50, p95) = percentiles(s.latency.as_ref());
                        let errors = s.attempts.saturating_sub(s.served);
                        row.extend([s.attempts.to_string(), errors.to_string(), p50, p95]);
                    }
                    None => row.extend(["-", "-", "-", "-"].map(String::from)),
                }
            }
            row.push(remaining(h));
            t.row(row);
        }
    }
    if ms.is_empty() {
        "(none)\n".into()
    } else {
        t.render()
    }
}

pub async fn run(conn: &ConnArgs, args: DescribeArgs) -> anyhow::Result<()> {
    let cp = conn.control_plane().await?;
    let out = match args.what {
        What::Pool => pool(conn, &cp, &args.name, args.window).await?,
        What::Route => route(conn, &cp, &args.name).await?,
        What::Provider => provider(&cp, &args.name).await?,
        What::Caller => super::callers_view::describe(&cp, &args.name).await?,
    };
    print!("{out}");
    Ok(())
}

async fn pool(conn: &ConnArgs, cp: &Cp, name: &str, window: u32) -> anyhow::Result<String> {
    let p = cp
        .clone()
        .get_pool(get(name))
        .await
        .map_err(refused)?
        .into_inner();
    let filter = pb::ListMembersRequest {
        pool: p.id.clone(),
        ..Default::default()
    };
    let members = list_members(cp, 1000, filter).await?;
    let routes = list_routes(cp, 1000, &p.id).await?;
    let live = Live::read(conn, Some(&p.name), window).await;
    let mut out = String::new();
    field(&mut out, "Name", &p.name);
    field(&mut out, "ID", &p.id);
    field(&mut out, "Strategy", output::strategy(p.strategy));
    field(&mut out, "Enabled", on(p.enabled));
    field(&mut out, "Description", dash(&p.description));
    field(&mut out, "Failover", output::failover(p.failover.as_ref()));
    field(&mut out, "Extra JSON", output::extra(p.allow_request_extra));
    stamps(
        &mut out,
        &p.etag,
        p.create_time.as_ref(),
        p.update_time.as_ref(),
    );
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    field(
        &mut out,
        "Routes",
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        },
    );
    live.note(&mut out);
    let _ = writeln!(out, "Members ({}):", members.len());
    indent(
        &mut out,
        &members_block(&members, &live, live.silent.is_none()),
        2,
    );
    if let Some(s) = &live.pool {
        let (p50, p95) = percentiles(s.latency.as_ref());
        let (t50, t95) = percentiles(s.ttft.as_ref());
        let _ = writeln!(
            out,
            "Traffic (last {window}s): {} requests, {} failed ({:.1}%), {} failovers, latency p50 {p50} p95 {p95}, first token p50 {t50} p95 {t95}, tokens {} in / {} out",
            s.requests,
            s.failed,
            s.error_rate * 100.0,
            s.failovers,
            s.input_tokens,
            s.output_tokens
        );
    } else if live.silent.is_none() {
        let _ = writeln!(out, "Traffic (last {window}s): none reported");
    }
    Ok(out)
}

async fn route(conn: &ConnArgs, cp: &Cp, name: &str) -> anyhow::Result<String> {
    let r = cp
        .clone()
        .get_route(get(name))
        .await
        .map_err(refused)?
        .into_inner();
    let live = Live::read(conn, None, 0).await;
    let mut out = String::new();
    field(&mut out, "Name", &r.name);
    field(&mut out, "ID", &r.id);
    field(&mut out, "Enabled", on(r.enabled));
    field(&mut out, "Description", dash(&r.description));
    stamps(
        &mut out,
        &r.etag,
        r.create_time.as_ref(),
        r.update_time.as_ref(),
    );
    live.note(&mut out);
    let _ = writeln!(out, "Tiers:");
    for (i, t) in r.tiers.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, output::tier(t));
        if let Some(pb::route_tier::Target::Pool(pool)) = &t.target {
            let filter = pb::ListMembersRequest {
                pool: pool.clone(),
                ..Default::default()
            };
            match list_members(cp, 1000, filter).await {
                Ok(ms) => indent(&mut out, &members_block(&ms, &live, false), 5),
                Err(e) => indent(&mut out, &format!("members unknown: {e:#}"), 5),
            }
        }
    }
    Ok(out)
}

async fn provider(cp: &Cp, name: &str) -> anyhow::Result<String> {
    let p = cp
        .clone()
        .get_provider(get(name))
        .await
        .map_err(refused)?
        .into_inner();
    let filter = pb::ListMembersRequest {
        provider: p.id.clone(),
        ..Default::default()
    };
    let members = list_members(cp, 1000, filter).await?;
    let mut pools: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &members {
        *pools.entry(m.pool_name.as_str()).or_default() += 1;
    }
    // Routes that name the provider directly, or a pool it serves in.
    let mut routes = Vec::new();
    for r in list_routes(cp, 1000, "").await? {
        let via: Vec<String> = r
            .tiers
            .iter()
            .filter_map(|t| match &t.target {
                Some(pb::route_tier::Target::Direct(d))
                    if d.split_once('/').is_some_and(|(prov, _)| prov == p.name) =>
                {
                    Some(format!("direct:{d}"))
                }
                Some(pb::route_tier::Target::Pool(pool)) if pools.contains_key(pool.as_str()) => {
                    Some(format!("pool:{pool}"))
                }
                _ => None,
            })
            .collect();
        if !via.is_empty() {
            routes.push(format!("{} (via {})", r.name, via.join(", ")));
        }
    }
    let mut out = String::new();
    field(&mut out, "Name", &p.name);
    field(&mut out, "ID", &p.id);
    field(&mut out, "Kind", output::kind(p.kind));
    field(&mut out, "Base URL", dash(&p.base_url));
    field(
        &mut out,
        "Credential",
        output::credential(p.credential_info.as_ref()),
    );
    field(&mut out, "Keys", output::keys(&p.keys));
    field(&mut out, "Enabled", on(p.enabled));
    field(&mut out, "Timeouts", output::timeouts(p.timeouts.as_ref()));
    let mut headers: Vec<&str> = p.extra_headers.keys().map(String::as_str).collect();
    headers.sort_unstable();
    field(&mut out, "Headers", dash(&headers.join(", ")));
    stamps(
        &mut out,
        &p.etag,
        p.create_time.as_ref(),
        p.update_time.as_ref(),
    );
    let pools: Vec<String> = pools
        .iter()
        .map(|(p, n)| format!("{p} ({n} member{})", if *n == 1 { "" } else { "s" }))
        .collect();
    field(
        &mut out,
        "Pools",
        if pools.is_empty() {
            "none".into()
        } else {
            pools.join(", ")
        },
    );
    field(
        &mut out,
        "Routes",
        if routes.is_empty() {
            "none".into()
        } else {
            routes.join(", ")
        },
    );
    Ok(out)
}
