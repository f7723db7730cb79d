//! Flags: which scenarios to run, how much load, where the binaries and Redis
//! are; and the `instructions` subcommand's (the performance gate).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::instructions::GateArgs;

/// A scenario; they run in this order (the order of the report's letters aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// a/b: closed-loop unary, direct vs worker; throughput (d), CPU per request (g).
    Unary,
    /// c: streaming, time to first token, direct vs worker.
    Stream,
    /// e: open loop at --rate, direct vs worker.
    Rate,
    /// f: one failed attempt before the good one (failover pool vs healthy pool).
    Failover,
    /// k: Redis commands per successful request (INFO stats around a closed-loop run).
    RedisCommands,
    /// i: a second worker whose Redis is --redis-delay-us away (each way), vs the first.
    RedisDelay,
    /// l: a member benched by worker A, seen by worker B: propagation time.
    Propagation,
    /// m: a new config revision, published, reaching three workers: propagation time.
    ConfigPropagation,
    /// j: CLIENT PAUSE on Redis during a fixed-rate run.
    RedisPause,
    /// r: routing by live signals: three workers, four members with latency
    /// profiles, one pool per strategy; then a worker killed under load.
    Routing,
}

impl Scenario {
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

/// Load generator for the Switchyard data plane (see bench/README.md).
#[derive(Parser, Debug)]
#[command(name = "switchyard-bench", version)]
pub struct Args {
    /// Without a subcommand: the scenarios.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Run only these scenarios (comma-separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Scenario>,
    /// Do not run these scenarios (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<Scenario>,
    /// Directory holding switchyard-data-plane and switchyard-fake-upstream (default: next to this binary).
    #[arg(long, global = true)]
    pub bin_dir: Option<PathBuf>,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", global = true)]
    pub redis_url: String,
    /// Extra pools of 10 members each in the snapshot (for the memory figure).
    #[arg(long, default_value_t = 0)]
    pub extra_pools: usize,
    /// Concurrent callers of the closed-loop scenarios.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Requests per closed-loop unary run (a direct, b via worker, i via the delayed worker).
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Requests per streaming run (c: direct SSE, GenerateStream).
    #[arg(long, default_value_t = 5_000)]
    pub stream_requests: u64,
    /// Time cap of each closed-loop run, in seconds.
    #[arg(long, default_value_t = 8)]
    pub max_secs: u64,
    /// Open-loop rate (requests per second) of the fixed-rate runs (e, i).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Duration of each fixed-rate run (e, i), in seconds.
    #[arg(long, default_value_t = 10)]
    pub rate_secs: u64,
    /// Requests per failover run (f: healthy pool, then failover pool); at most 900.
    #[arg(long, default_value_t = 500)]
    pub failover_requests: u64,
    /// Requests of the Redis-commands run (k).
    #[arg(long, default_value_t = 20_000)]
    pub commands_requests: u64,
    /// Idle window before the Redis-commands run (k), in seconds: the worker's background commands.
    #[arg(long, default_value_t = 2)]
    pub idle_secs: u64,
    /// Delay the proxy adds in each direction between the second worker and Redis (i), in microseconds.
    #[arg(long, default_value_t = 500)]
    pub redis_delay_us: u64,
    /// Rate of the Redis-pause run (j), requests per second.
    #[arg(long, default_value_t = 200)]
    pub pause_rate: u64,
    /// Duration of the Redis-pause run (j), in seconds.
    #[arg(long, default_value_t = 9)]
    pub pause_secs: u64,
    /// When the pause starts, in milliseconds from the start of run j.
    #[arg(long, default_value_t = 3000)]
    pub pause_at_ms: u64,
    /// Length of the pause (CLIENT PAUSE <ms> ALL), in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub pause_ms: u64,
    /// Trials of the propagation scenario (l).
    #[arg(long, default_value_t = 30)]
    pub prop_trials: u32,
    /// Cooldown of the benched member in the propagation scenario (l), in milliseconds (100 at least).
    #[arg(long, default_value_t = 300)]
    pub prop_cooldown_ms: u32,
    /// A trial that has not converged after this many milliseconds is a miss (l).
    #[arg(long, default_value_t = 2000)]
    pub prop_timeout_ms: u64,
    /// Trials of the config-propagation scenario (m): revisions published, each awaited on three workers.
    #[arg(long, default_value_t = 30)]
    pub config_trials: u32,
    /// Open-loop rate of each routing run (r), streams per second over three workers.
    #[arg(long, default_value_t = 100)]
    pub routing_rate: u64,
    /// Duration of each routing run (r), in seconds.
    #[arg(long, default_value_t = 8)]
    pub routing_secs: u64,
    /// Warm-up requests per request kind before measuring (not reported).
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Content chunks per fake answer.
    #[arg(long, default_value_t = 5)]
    pub chunks: usize,
    /// Fake upstream delay before each streamed chunk, in microseconds.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_us: u64,
    /// RUST_LOG of the workers; it must keep the "data plane listening" info line.
    #[arg(long, default_value = "warn,switchyard_data_plane::server=info,switchyard_data_plane::sync=info")]
    pub worker_log: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The performance gate: instructions per request of the worker under
    /// callgrind, four paths, against the committed baseline.
    Instructions(GateArgs),
}

impl Args {
    /// The scenarios to run, in run order.
    pub fn selected(&self) -> Vec<Scenario> {
        Scenario::value_variants()
            .iter()
            .copied()
            .filter(|s| self.only.is_empty() || self.only.contains(s))
            .filter(|s| !self.skip.contains(s))
            .collect()
    }
}
