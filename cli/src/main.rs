//! `switchyard`: the operator's command.
//! - `dev`: the embedded default — the whole thing on one machine with no
//!   Postgres or Redis (SQLite file, in-process bus, no auth, demo pool).
//! - `migrate`: runs schema migrations against DATABASE_URL.
//! - `keygen`: prints a fresh master key for sealing inline credentials.
//! - operator commands over gRPC (`ctl`): apply, export, validate, ...

mod ctl;
mod dev;
mod document;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use switchyard_control_plane::server::{connect_database, migrate};
use switchyard_shared::args::TelemetryArgs;
use switchyard_shared::seal::MasterKey;

const EXAMPLES: &str = "\
Examples:
  switchyard dev                              # everything on this machine
  switchyard export > switchyard.yaml         # the whole config as a file
  switchyard validate -f switchyard.yaml      # offline, for CI
  switchyard apply -f switchyard.yaml --dry-run
  switchyard apply -f switchyard.yaml --prune
  switchyard get members --pool coding        # with health from a worker
  switchyard describe pool coding             # members, health, recent traffic
  switchyard set member coding/openai/gpt-4o --status draining
  KEY=$(switchyard create caller billing --model coding --rpm 600 -q)   # the key, once
  switchyard rotate caller billing --grace 1h # a new key; the old one works for an hour
  switchyard watch --from-earliest            # the change feed and who made each change
  switchyard context set prod --server https://cp.example:50051 --token-env SWITCHYARD_PROD_TOKEN";

#[derive(Parser)]
#[command(version, about = "Switchyard: an LLM pool router", after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    conn: ctl::client::ConnArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything locally: SQLite, in-process bus, no auth, a demo pool of mock upstreams.
    Dev {
        /// Control-plane listen address.
        #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Data-plane (inference) listen address.
        #[arg(
            long,
            env = "SWITCHYARD_INFERENCE_LISTEN",
            default_value = "127.0.0.1:50052"
        )]
        inference_listen: SocketAddr,
        /// Where Prometheus scrapes both planes' `GET /metrics` (host:port, or `off`).
        #[arg(
            long,
            env = "SWITCHYARD_METRICS_LISTEN",
            default_value = "127.0.0.1:9102"
        )]
        metrics_listen: String,
        /// Where the OpenAI-compatible HTTP door listens (host:port, or `off`).
        #[arg(long, env = "SWITCHYARD_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
        http_listen: String,
        /// Where the SQLite database and the generated master key live.
        #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = ".switchyard")]
        data_dir: PathBuf,
        #[command(flatten)]
        credentials: switchyard_shared::args::CredentialArgs,
        #[command(flatten)]
        telemetry: TelemetryArgs,
    },
    /// Run schema migrations and exit.
    Migrate {
        #[arg(
            long,
            env = "DATABASE_URL",
            hide_env_values = true,
            value_parser = switchyard_shared::args::secret
        )]
        database_url: secrecy::SecretString,
        #[command(flatten)]
        telemetry: TelemetryArgs,
    },
    /// Print a new base64 master key (for SWITCHYARD_MASTER_KEY) on stdout,
    /// and its id on stderr (logs and signed snapshots name keys by id).
    Keygen,
    /// Make the control plane match a config file: one transaction, one revision.
    Apply(ctl::apply::ApplyArgs),
    /// Print the whole config as a file `apply` accepts.
    Export(ctl::export::ExportArgs),
    /// Check a config file offline (no server): names, values, references; with line numbers.
    Validate(ctl::validate::ValidateArgs),
    /// Print the config file's JSON Schema (for editors and CI).
    Schema,
    /// List providers, pools, members, routes or callers as a table (or JSON/YAML).
    Get(ctl::get::GetArgs),
    /// Show one pool, route, provider or caller with what it is tied to, health and traffic.
    Describe(ctl::describe::DescribeArgs),
    /// Follow the change feed: one line per committed change.
    Watch(ctl::watch::WatchArgs),
    /// Create one provider, pool, member, route or caller.
    #[command(subcommand)]
    Create(ctl::create::CreateCmd),
    /// Delete one provider, pool, member, route or caller.
    Delete(ctl::edit::DeleteArgs),
    /// Change some fields of a member, a pool or a caller (only the flags given).
    #[command(subcommand)]
    Set(ctl::edit::SetCmd),
    /// Give a caller a new key (printed once); the old one works for a grace period.
    #[command(subcommand)]
    Rotate(ctl::callers::RotateCmd),
    /// Named servers to talk to: set, use, list, delete.
    #[command(subcommand)]
    Context(ctl::context_cmd::ContextCmd),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let conn = cli.conn;
    let result = match cli.command {
        Command::Keygen => keygen(),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&document::schema()).unwrap_or_default()
            );
            Ok(())
        }
        Command::Apply(args) => ctl::apply::run(&conn, args).await,
        Command::Export(args) => ctl::export::run(&conn, args).await,
        Command::Validate(args) => ctl::validate::run(&args),
        Command::Get(args) => ctl::get::run(&conn, args).await,
        Command::Describe(args) => ctl::describe::run(&conn, args).await,
        Command::Watch(args) => ctl::watch::run(&conn, args).await,
        Command::Create(cmd) => ctl::create::create(&conn, cmd).await,
        Command::Delete(args) => ctl::edit::delete(&conn, args).await,
        Command::Set(cmd) => ctl::edit::set(&conn, cmd).await,
        Command::Rotate(cmd) => ctl::callers::rotate(&conn, cmd).await,
        Command::Context(cmd) => ctl::context_cmd::run(&conn, cmd).await,
        Command::Migrate {
            database_url,
            telemetry,
        } => {
            with_telemetry(&telemetry, "switchyard-migrate", async move {
                let db =
                    connect_database(secrecy::ExposeSecret::expose_secret(&database_url)).await?;
                migrate(&db).await?;
                tracing::info!("migrations applied");
                Ok(())
            })
            .await
        }
        Command::Dev {
            listen,
            inference_listen,
            metrics_listen,
            http_listen,
            data_dir,
            credentials,
            telemetry,
        } => {
            with_telemetry(
                &telemetry,
                "switchyard-dev",
                // Boxed: both servers' futures together are large.
                Box::pin(dev::run(
                    listen,
                    inference_listen,
                    metrics_listen,
                    http_listen,
                    data_dir,
                    credentials,
                    telemetry
                        .otlp_endpoint
                        .as_deref()
                        .is_some_and(|e| !e.is_empty()),
                )),
            )
            .await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchyard: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn with_telemetry(
    args: &TelemetryArgs,
    name: &'static str,
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let _guard = switchyard_shared::telemetry::init(&args.config(name))?;
    f.await
}

/// A new master key on stdout (so `$(switchyard keygen)` captures only
/// it), its id on stderr.
fn keygen() -> anyhow::Result<()> {
    let key = MasterKey::generate_base64();
    let id = MasterKey::from_base64(&key)
        .map_err(anyhow::Error::msg)?
        .id();
    println!("{key}");
    eprintln!("key id: {id}");
    Ok(())
}
