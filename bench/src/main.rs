//! `switchyard-bench`: drives the real `switchyard-data-plane` release binary
//! against the real `switchyard-fake-upstream`, on 127.0.0.1, and prints what
//! the worker adds: latency, time to first token, throughput, failover cost,
//! CPU per request and memory; and how it copes with Redis further away,
//! Redis paused, how many Redis commands a request costs, how fast a bench
//! reaches another worker and how fast a new config revision reaches three.
//! Every loop is bounded in count and in time. `switchyard-bench
//! instructions` is the performance gate: instructions per request of the
//! worker under callgrind, against a committed baseline.
//!
//! # Layout
//!
//! - `args`: the flags, and which scenarios run (`--only`, `--skip`).
//! - `procs`: starting the fake upstream and workers, their logs, /proc figures.
//! - `config`: the snapshots, written to Redis through `RedisKeys`; cleanup.
//! - `calls`: one timed request of each kind, direct or through a worker.
//! - `load`: closed-loop and open-loop (fixed-rate, phased) drivers.
//! - `delay_proxy`: the TCP proxy that puts Redis 0.5 ms away each way.
//! - `stats`: a run's histogram and errors.
//! - `report`: the table, derived figures, problems and the JSON line.
//! - `scenarios`: one module per scenario, and what they share.
//! - `instructions`: the gate (callgrind runs, the baseline, the comparison).
// A load generator: spawns its callers freely, reads /proc, and its delay
// proxy sleeps on plain threads for sub-millisecond precision.
#![allow(clippy::disallowed_methods)]

mod args;
mod calls;
mod config;
mod delay_proxy;
mod instructions;
mod load;
mod procs;
mod report;
mod scenarios;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use tokio::time::timeout;

use crate::args::{Args, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.command.is_none() && args.selected().is_empty() {
        return fail("--only/--skip leave no scenario to run");
    }
    let prefix = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let redis = match redis::Client::open(args.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => return fail(&format!("bad REDIS_URL: {e}")),
    };
    let mut conn = match timeout(Duration::from_secs(5), redis.get_multiplexed_async_connection()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return fail(&format!("cannot connect to Redis at {}: {e}", args.redis_url)),
        Err(_) => return fail(&format!("Redis at {} did not answer within 5 s", args.redis_url)),
    };
    // Every child is killed when `run` returns, whatever the outcome.
    let result = match &args.command {
        Some(Command::Instructions(gate)) => instructions::run(&args, gate, &prefix, conn.clone()).await,
        None => scenarios::run(&args, &prefix, redis, conn.clone()).await,
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    match config::delete_keys(&mut conn, &prefix).await {
        Ok(n) => eprintln!("cleanup: deleted {n} Redis keys containing {prefix}"),
        Err(e) => eprintln!("cleanup: cannot delete the keys containing {prefix}: {e}"),
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("switchyard-bench: {msg}");
    ExitCode::FAILURE
}
