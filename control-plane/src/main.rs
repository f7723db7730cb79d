//! `switchyard-control-plane`: parse config, start telemetry, serve.

use clap::Parser as _;
use switchyard_control_plane::config::Args;
use switchyard_control_plane::server::ControlPlane;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let _telemetry = match switchyard_shared::telemetry::init(
        &args.telemetry.config("switchyard-control-plane"),
    ) {
        Ok(g) => g,
        Err(err) => {
            eprintln!("switchyard-control-plane: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let settings = match args.settings() {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            return std::process::ExitCode::from(2);
        }
    };
    let tls = match args.tls.load() {
        Ok(t) => t,
        Err(err) => {
            tracing::error!(error = %err, "invalid tls configuration");
            return std::process::ExitCode::from(2);
        }
    };
    // Bind only once the store is ready, so nothing connects to a port
    // that cannot answer yet.
    let metrics_at = match switchyard_shared::metrics::parse_listen(&args.metrics_listen) {
        Ok(a) => a,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            return std::process::ExitCode::from(2);
        }
    };
    let mut cp = match ControlPlane::build(settings).await {
        Ok(cp) => cp,
        Err(err) => {
            tracing::error!(error = %err, "control plane failed to start");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut registry = prometheus_client::registry::Registry::default();
    cp.register_metrics(&mut registry);
    if let Some(tls) = &tls {
        tls.register_metrics(&mut registry);
    }
    let metrics_tls = args.tls.metrics(tls.as_ref());
    cp.set_tls(tls);
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
    let result = cp
        .serve(listener, switchyard_shared::shutdown::signal())
        .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "control plane failed");
            std::process::ExitCode::FAILURE
        }
    }
}
