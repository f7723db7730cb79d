//! `switchyard-fake-upstream`: the fake upstream as a process, for benchmarks.
// Test plumbing: spawns freely, reads its env overrides, blocks in setup.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard_testkit::{FakeConfig, FakeUpstream, Fault};

/// Fake OpenAI / Anthropic upstream (deterministic answers, no faults).
#[derive(Debug, Parser)]
#[command(name = "switchyard-fake-upstream", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Content chunks per answer.
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Delay before each streamed content chunk, in microseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_us: u64,
    /// A model's time to first byte: `MODEL=TTFT_MS` or
    /// `MODEL=TTFT_MS,KNEE,SLOW_MS` (TTFT_MS while at most KNEE requests for
    /// it are in flight, SLOW_MS beyond). Repeatable.
    #[arg(long = "latency", value_parser = parse_latency)]
    latency: Vec<(String, Fault)>,
    /// A model's budget per minute: `MODEL=RPM` or `MODEL=RPM,TPM`, told in
    /// the provider's rate-limit headers, 429 once spent. Repeatable; a
    /// model has either a latency profile or a budget.
    #[arg(long = "rate-limit", value_parser = parse_rate_limit)]
    rate_limit: Vec<(String, Fault)>,
}

fn parse_rate_limit(s: &str) -> Result<(String, Fault), String> {
    let usage = || format!("--rate-limit {s}: use MODEL=RPM[,TPM]");
    let (model, spec) = s.split_once('=').ok_or_else(usage)?;
    let num = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|e| format!("--rate-limit {s}: {v}: {e}"))
    };
    let (rpm, tpm) = match spec.split(',').collect::<Vec<_>>().as_slice() {
        [rpm] => (num(rpm)?, u64::MAX),
        [rpm, tpm] => (num(rpm)?, num(tpm)?),
        _ => return Err(usage()),
    };
    if model.is_empty() {
        return Err(usage());
    }
    Ok((model.to_owned(), Fault::RateLimit { rpm, tpm }))
}

fn parse_latency(s: &str) -> Result<(String, Fault), String> {
    let (model, spec) = s
        .split_once('=')
        .ok_or_else(|| format!("--latency {s}: use MODEL=TTFT_MS[,KNEE,SLOW_MS]"))?;
    let ms = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| format!("--latency {s}: {v}: {e}"))
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let fault = match parts.as_slice() {
        [ttft] => Fault::Latency {
            ttft: ms(ttft)?,
            knee: usize::MAX,
            slow: Duration::ZERO,
        },
        [ttft, knee, slow] => Fault::Latency {
            ttft: ms(ttft)?,
            knee: knee
                .trim()
                .parse()
                .map_err(|e| format!("--latency {s}: {knee}: {e}"))?,
            slow: ms(slow)?,
        },
        _ => return Err(format!("--latency {s}: use MODEL=TTFT_MS[,KNEE,SLOW_MS]")),
    };
    Ok((model.to_owned(), fault))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = FakeConfig {
        chunks: args.chunks,
        chunk_delay: Duration::from_micros(args.chunk_delay_us),
    };
    let upstream = match FakeUpstream::bind(args.listen, config).await {
        Ok(upstream) => upstream,
        Err(err) => {
            eprintln!(
                "switchyard-fake-upstream: cannot listen on {}: {err}",
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    for (model, fault) in args.latency.into_iter().chain(args.rate_limit) {
        upstream.set_fault(&model, fault);
    }
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "listening on http://{}", upstream.addr())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    if let Err(err) = shutdown_signal().await {
        eprintln!("switchyard-fake-upstream: signal handling failed: {err}");
    }
    upstream.shutdown().await;
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
