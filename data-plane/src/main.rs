//! `switchyard-data-plane`: parse config, start telemetry, serve.

use clap::Parser as _;

// Many small allocations per request (headers, JSON, protobuf): mimalloc
// spends less CPU on them than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use switchyard_data_plane::config::Args;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let _telemetry = match switchyard_shared::telemetry::init(&args.telemetry()) {
        Ok(g) => g,
        Err(err) => {
            eprintln!("switchyard-data-plane: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut settings = match args.settings() {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            return std::process::ExitCode::from(2);
        }
    };
    let metrics_at = match switchyard_shared::metrics::parse_listen(&args.metrics_listen) {
        Ok(a) => a,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            return std::process::ExitCode::from(2);
        }
    };
    let mut registry = prometheus_client::registry::Registry::default();
    settings.metrics = switchyard_data_plane::observe::Metrics::register(&mut registry);
    if let Some(tls) = &settings.tls {
        tls.register_metrics(&mut registry);
    }
    let metrics_tls = args.tls.metrics(settings.tls.as_ref());
    if let Err(err) =
        switchyard_shared::metrics::start_with(metrics_at, registry, metrics_tls).await
    {
        tracing::error!(error = %err, listen = %args.metrics_listen, "cannot serve metrics");
        return std::process::ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(error = %err, listen = %args.listen, "cannot listen");
            return std::process::ExitCode::from(2);
        }
    };
    match switchyard_shared::metrics::parse_listen_flag("--http-listen", &args.http_listen) {
        Ok(None) => {}
        Ok(Some(addr)) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => settings.http = Some(l),
            Err(err) => {
                tracing::error!(error = %err, listen = %args.http_listen, "cannot listen for HTTP");
                return std::process::ExitCode::from(2);
            }
        },
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            return std::process::ExitCode::from(2);
        }
    }
    let served = match switchyard_data_plane::server::Worker::build(listener, settings).await {
        Ok(worker) => worker.run(switchyard_shared::shutdown::signal()).await,
        Err(err) => Err(err),
    };
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "data plane failed");
            std::process::ExitCode::FAILURE
        }
    }
}
