//! r: routing by live signals. A fake of its own whose models have latency
//! profiles, a Redis prefix of its own and three workers; one pool per
//! strategy, each over four members of its own (own model names, so the
//! fake's counts and rate windows are per strategy):
//!
//! - `fast`: 50 ms to the first byte;
//! - `slow`: 400 ms;
//! - `knee`: 50 ms while at most 8 of its requests are in flight, 600 ms
//!   beyond; `max_concurrency` 8;
//! - `limited`: 50 ms, `rpm_limit` twice what the fake's own budget allows,
//!   the fake sending OpenAI's `x-ratelimit-*` headers and 429 past its budget.
//!
//! Each strategy gets the same open-loop load of streaming requests, spread
//! over the three workers, after one uncounted second of it (warm signals);
//! reported per strategy: p50/p99 time to first
//! token, each member's share, the fake's 429s, the most requests in flight
//! at once per member at the fake, and Redis commands per request beyond the
//! workers' idle background. Then a worker is killed (SIGKILL) under load and
//! the time until the others' fleet in-flight shows no phantom load is
//! measured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_proto::v1 as pb;
use switchyard_shared::keys::RedisKeys;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use super::Bench;
use crate::calls::{Client, status_text};
use crate::config::{self, Redis};
use crate::load::REQUEST_TIMEOUT;
use crate::procs::{self, Worker};
use crate::report::goal;
use crate::stats::{Run, lock, micros};

const STRATEGIES: [(&str, pb::Strategy); 4] = [
    ("round_robin", pb::Strategy::RoundRobin),
    ("least_busy", pb::Strategy::LeastBusy),
    ("latency", pb::Strategy::Latency),
    ("quota_aware", pb::Strategy::QuotaAware),
];
const ROLES: [&str; 4] = ["fast", "slow", "knee", "limited"];
const KNEE: usize = 8;
/// The fake's own budget for each `limited` model, requests per minute.
const FAKE_RPM: u64 = 120;

fn model(role: &str, strategy: &str) -> String {
    format!("{role}-{strategy}")
}

/// The fake's flags: a latency profile for every model, a budget for the limited ones.
fn fake_args() -> Vec<String> {
    let mut out = Vec::new();
    for (s, _) in STRATEGIES {
        for (role, spec) in [("fast", "50".to_owned()), ("slow", "400".into()), ("knee", format!("50,{KNEE},600"))] {
            out.extend(["--latency".into(), format!("{}={spec}", model(role, s))]);
        }
        out.extend(["--rate-limit".into(), format!("{}={FAKE_RPM}", model("limited", s))]);
    }
    out
}

/// Revision 1: one pool per strategy (named after it), members as above.
fn snapshot(base_url: &str) -> (pb::Snapshot, HashMap<String, &'static str>) {
    let fake = pb::SnapshotProvider {
        id: uuid::Uuid::new_v4().to_string(),
        name: "fake".into(),
        kind: pb::ProviderKind::Openai as i32,
        base_url: base_url.into(),
        timeouts: Some(pb::Timeouts { connect_ms: 1000, first_byte_ms: 5000, request_ms: 30_000 }),
        enabled: true,
        ..Default::default()
    };
    let mut roles = HashMap::new();
    let pools = STRATEGIES
        .iter()
        .map(|(s, strategy)| {
            let members = ROLES
                .iter()
                .map(|role| {
                    let id = uuid::Uuid::new_v4().to_string();
                    roles.insert(id.clone(), *role);
                    pb::SnapshotMember {
                        id,
                        provider_id: fake.id.clone(),
                        provider_name: "fake".into(),
                        upstream_model: model(role, s),
                        weight: 1,
                        status: pb::MemberStatus::Active as i32,
                        max_concurrency: (*role == "knee").then_some(KNEE as u32),
                        rpm_limit: (*role == "limited").then_some(FAKE_RPM * 2),
                        ..Default::default()
                    }
                })
                .collect();
            pb::SnapshotPool {
                id: uuid::Uuid::new_v4().to_string(),
                name: (*s).into(),
                strategy: *strategy as i32,
                failover: Some(pb::FailoverPolicy {
                    transient_retries: 1,
                    failure_threshold: 3,
                    cooldown_base_ms: 1000,
                    cooldown_max_ms: 60_000,
                    advance_on_permanent: false,
                }),
                enabled: true,
                members,
                allow_request_extra: None,
            }
        })
        .collect();
    (pb::Snapshot { revision: 1, providers: vec![fake], pools, ..Default::default() }, roles)
}

/// One streaming request: time to the first text delta, and the member that served.
async fn stream_once(grpc: Client, pool: &'static str) -> Result<(u64, String), String> {
    use pb::generate_stream_event::Event;
    let msg = pb::ChatMessage { role: pb::Role::User as i32, content: "hello".into(), ..Default::default() };
    let req =
        pb::GenerateRequest { model: pool.into(), messages: vec![msg], max_tokens: Some(16), ..Default::default() };
    let mut req = tonic::Request::new(req);
    req.set_timeout(Duration::from_secs(10));
    let t = Instant::now();
    let mut s = grpc.clone().generate_stream(req).await.map_err(status_text)?.into_inner();
    let (mut first, mut member, mut finished) = (None, String::new(), false);
    while let Some(ev) = s.message().await.map_err(status_text)? {
        match ev.event {
            Some(Event::Start(st)) => member = st.served_by.map(|b| b.member_id).unwrap_or_default(),
            Some(Event::TextDelta(d)) if first.is_none() && !d.is_empty() => first = Some(micros(t.elapsed())),
            Some(Event::Finish(_)) => finished = true,
            _ => {}
        }
    }
    match first {
        Some(us) if finished => Ok((us, member)),
        _ => Err("GenerateStream: no text or no finish".into()),
    }
}

/// Open loop at `rate` for `secs`, request i to worker i mod n: the TTFT
/// histogram and the successful requests per member id.
async fn drive(workers: &[Client], pool: &'static str, rate: u64, secs: u64) -> (Run, HashMap<String, u64>) {
    let run = Arc::new(Mutex::new(Run::new()));
    let served: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let start = Instant::now() + Duration::from_millis(20);
    let mut set = JoinSet::new();
    for i in 0..rate.max(1) * secs {
        tokio::time::sleep_until(start + Duration::from_nanos(i * 1_000_000_000 / rate.max(1))).await;
        while set.try_join_next().is_some() {}
        let grpc = workers[usize::try_from(i).unwrap_or(0) % workers.len()].clone();
        let (run, served) = (Arc::clone(&run), Arc::clone(&served));
        set.spawn(async move {
            let r = timeout(REQUEST_TIMEOUT, stream_once(grpc, pool)).await.unwrap_or(Err("bench timeout".into()));
            match r {
                Ok((us, member)) => {
                    *lock(&served).entry(member).or_default() += 1;
                    lock(&run).record(Ok(us));
                }
                Err(e) => lock(&run).record(Err(e)),
            }
        });
    }
    let _ = timeout(REQUEST_TIMEOUT, async { while set.join_next().await.is_some() {} }).await;
    let mut out = std::mem::replace(&mut *lock(&run), Run::new());
    out.secs = start.elapsed().as_secs_f64();
    let served = lock(&served).clone();
    (out, served)
}

async fn commands(conn: &mut Redis) -> Result<u64, String> {
    let info: String = redis::cmd("INFO").arg("stats").query_async(conn).await.map_err(|e| format!("INFO: {e}"))?;
    let line = info.lines().find_map(|l| l.strip_prefix("total_commands_processed:"));
    line.and_then(|v| v.trim().parse().ok()).ok_or_else(|| "INFO stats: no total_commands_processed".into())
}

/// Calls of HINCRBY so far: the pool statistics' flushes (a background
/// pipeline of one HINCRBY per counter touched, not per request).
async fn hincrby_calls(conn: &mut Redis) -> Result<u64, String> {
    let info: String =
        redis::cmd("INFO").arg("commandstats").query_async(conn).await.map_err(|e| format!("INFO: {e}"))?;
    let line = info.lines().find_map(|l| l.strip_prefix("cmdstat_hincrby:"));
    Ok(line
        .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Each member's fleet in-flight as worker 1 reports it (ListModels every
/// 50 ms for `span`), averaged over the samples.
async fn sample_in_flight(grpc: Client, pool: &'static str, span: Duration) -> Result<HashMap<String, f64>, String> {
    let end = Instant::now() + span;
    let (mut sums, mut n) = (HashMap::<String, f64>::new(), 0u32);
    while Instant::now() < end {
        let r = grpc.clone().list_models(pb::ListModelsRequest {}).await.map_err(status_text)?.into_inner();
        if let Some(m) = r.models.iter().find(|m| m.name == pool) {
            for h in &m.members {
                *sums.entry(h.member_id.clone()).or_default() += f64::from(h.in_flight);
            }
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(sums.into_iter().map(|(id, s)| (id, s / f64::from(n.max(1)))).collect())
}

async fn fake_stats(http: &reqwest::Client, base: &str) -> Result<Value, String> {
    let url = format!("{}/stats", base.trim_end_matches("/v1"));
    let r = http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    r.json().await.map_err(|e| format!("GET {url}: {e}"))
}

async fn clear_fake_stats(http: &reqwest::Client, base: &str) -> Result<(), String> {
    let url = format!("{}/stats", base.trim_end_matches("/v1"));
    let r = http.delete(&url).send().await.map_err(|e| format!("DELETE {url}: {e}"))?;
    r.error_for_status().map(drop).map_err(|e| format!("DELETE {url}: {e}"))
}

/// Sum of the fleet in-flight a worker reports for `pool`'s members.
async fn fleet_in_flight(grpc: &Client, pool: &str) -> Result<u64, String> {
    let r = grpc.clone().list_models(pb::ListModelsRequest {}).await.map_err(status_text)?.into_inner();
    let m = r.models.iter().find(|m| m.name == pool).ok_or_else(|| format!("ListModels: no {pool}"))?;
    Ok(m.members.iter().map(|h| u64::from(h.in_flight)).sum())
}

pub async fn run(b: &mut Bench<'_>) -> Result<(), String> {
    let (rate, secs) = (b.args.routing_rate, b.args.routing_secs);
    let fake = procs::start_fake_with(&b.bin, &fake_args()).await?;
    let prefix = format!("{}_routing", b.prefix);
    let (snap, roles) = snapshot(&fake.base_url);
    let mut conn = b.conn.clone();
    config::publish(&mut conn, &RedisKeys::new(&prefix), &snap).await?;
    let redis_url = b.args.redis_url.clone();
    let mut workers: Vec<Worker> = Vec::new();
    for i in 1..=3 {
        workers.push(b.start_worker(&format!("routing-{i}"), &redis_url, &prefix, &[]).await?);
    }
    let grpcs: Vec<Client> = workers.iter().map(|w| w.grpc.clone()).collect();
    let http = reqwest::Client::new();
    // Warm-up on the round-robin pool: connections, and every member seen once.
    drive(&grpcs, "round_robin", 40, 1).await;
    let idle = Duration::from_secs(2);
    let i0 = commands(&mut conn).await?;
    tokio::time::sleep(idle).await;
    let idle_rate = commands(&mut conn).await?.saturating_sub(i0 + 1) as f64 / idle.as_secs_f64();
    b.report.line(
        "routing (r): load",
        format!(
            "{rate} streams/s for {secs} s per strategy over 3 workers; idle background {idle_rate:.1} Redis cmds/s"
        ),
    );
    let mut rr_p99 = None;
    for (s, _) in STRATEGIES {
        eprintln!("running routing {s}...");
        // A second of the same load first, not counted: every worker's
        // signals warm (the steady state a caller lives in), then the
        // fake's counts start afresh.
        drive(&grpcs, s, rate, 1).await;
        clear_fake_stats(&http, &fake.base_url).await?;
        let c0 = commands(&mut conn).await?;
        let h0 = hincrby_calls(&mut conn).await?;
        // Only LEAST_BUSY's goal needs the fleet in-flight sampled; ListModels
        // reads the limited member's minute from Redis, which would count in
        // the other strategies' Redis figures.
        let span = Duration::from_secs(if s == "least_busy" { secs } else { 0 });
        let sampler = tokio::spawn(sample_in_flight(grpcs[0].clone(), s, span));
        let (run, served) = drive(&grpcs, s, rate, secs).await;
        let in_flight = sampler.await.map_err(|e| format!("sampler: {e}"))??;
        let used = commands(&mut conn).await?.saturating_sub(c0 + 1) as f64;
        let extra = (used - idle_rate * run.secs).max(0.0) / run.ok.max(1) as f64;
        let stats_cmds = hincrby_calls(&mut conn).await?.saturating_sub(h0) as f64 / run.ok.max(1) as f64;
        let stats = fake_stats(&http, &fake.base_url).await?;
        let mut shares = Vec::new();
        let (mut r429, mut peaks) = (0u64, Vec::new());
        for role in ROLES {
            let n: u64 = served.iter().filter(|(id, _)| roles.get(*id) == Some(&role)).map(|(_, n)| n).sum();
            shares.push(format!("{role} {:.0}%", 100.0 * n as f64 / run.ok.max(1) as f64));
            let st = &stats[model(role, s)];
            r429 += st["statuses"]["429"].as_u64().unwrap_or(0);
            peaks.push(format!("{role} {}", st["max_in_flight"].as_u64().unwrap_or(0)));
        }
        let knee_peak = stats[model("knee", s)]["max_in_flight"].as_u64().unwrap_or(0);
        let (p50, p99) = (run.p_ms(0.5), run.p_ms(0.99));
        if s == "round_robin" {
            rr_p99 = Some(p99);
        }
        let mut verdicts = vec![format!("cap {KNEE} held: {}", goal(knee_peak <= KNEE as u64))];
        let mean_of = |role: &str| {
            let v: Vec<f64> =
                in_flight.iter().filter(|(id, _)| roles.get(*id) == Some(&role)).map(|(_, m)| *m).collect();
            v.iter().sum::<f64>()
        };
        let means: Vec<(&str, f64)> = ROLES.iter().map(|r| (*r, mean_of(r))).collect();
        let fleet = match s {
            "least_busy" => {
                let m = means.iter().map(|(r, m)| format!("{r} {m:.1}")).collect::<Vec<_>>().join(", ");
                format!("mean fleet in-flight {m} (ListModels every 50 ms: its Redis reads count below); ")
            }
            _ => String::new(),
        };
        match s {
            "least_busy" => {
                // Members that take traffic: a near-limit member is skipped
                // by design and sits below the mean.
                let busy: Vec<f64> = means.iter().map(|(_, m)| *m).filter(|m| *m > 0.05).collect();
                let mean = busy.iter().sum::<f64>() / busy.len().max(1) as f64;
                let worst = busy.iter().copied().fold(0.0, f64::max);
                verdicts.push(format!("max {worst:.1} <= 1.5x mean {mean:.1}: {}", goal(worst <= 1.5 * mean)));
            }
            "latency" => {
                let met = rr_p99.is_some_and(|rr| p99 <= rr / 3.0);
                verdicts.push(format!("p99 <= 1/3 of round robin's: {}", goal(met)));
            }
            "quota_aware" => verdicts.push(format!("0 upstream 429s: {}", goal(r429 == 0))),
            _ => {}
        }
        b.report.line(
            &format!("routing {s}"),
            format!(
                "TTFT p50 {p50:.1} ms p99 {p99:.1} ms; ok {} errors {}; share {}; 429s {r429}; \
                 max in flight at the fake {}; {fleet}\
                 Redis cmds/req beyond idle {extra:.3} (statistics HINCRBY {stats_cmds:.3}); {}",
                run.ok,
                run.errors,
                shares.join(", "),
                peaks.join(", "),
                verdicts.join("; ")
            ),
        );
        if !run.samples.is_empty() {
            b.report.line(&format!("routing {s} errors"), run.samples.join(" | "));
        }
        b.report.set(
            &format!("routing_{s}"),
            json!({"ttft_p50_ms": p50, "ttft_p99_ms": p99, "ok": run.ok, "errors": run.errors,
                   "upstream_429": r429, "knee_max_in_flight": knee_peak, "redis_cmds_per_req": extra}),
        );
    }
    kill_under_load(b, workers, rate).await
}

/// Kills the third worker (SIGKILL) while the slow member holds requests,
/// then polls the first worker's fleet in-flight until it shows none.
async fn kill_under_load(b: &mut Bench<'_>, mut workers: Vec<Worker>, rate: u64) -> Result<(), String> {
    let grpcs: Vec<Client> = workers.iter().map(|w| w.grpc.clone()).collect();
    let load = tokio::spawn(async move { drive(&grpcs, "least_busy", rate, 3).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = workers.pop().ok_or("no worker to kill")?;
    let killed_at = Instant::now();
    b.stopped.push(victim.stop().await);
    let _ = load.await;
    let watcher = workers.first().ok_or("no worker left")?.grpc.clone();
    let mut cleared = None;
    while killed_at.elapsed() < Duration::from_secs(15) {
        if fleet_in_flight(&watcher, "least_busy").await? == 0 {
            cleared = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = match cleared {
        Some(d) => {
            format!("no phantom in-flight {:.1} s after the kill (load ended ~1.5 s after it): met", d.as_secs_f64())
        }
        None => "fleet in-flight still above 0 15 s after the kill: MISSED".into(),
    };
    b.report.line("routing kill -9 under load", text);
    b.report.set("routing_kill_cleared_ms", json!(cleared.map(|d| d.as_millis() as u64)));
    for w in workers {
        b.stopped.push(w.stop().await);
    }
    Ok(())
}
