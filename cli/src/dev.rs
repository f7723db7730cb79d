//! `switchyard dev`: the embedded default — both planes in one process on
//! SQLite, an in-process bus, no auth, and a demo pool of mock upstreams.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use switchyard_control_plane::server::{BusSettings, ControlPlane, Settings};
use switchyard_control_plane::store::Store;
use switchyard_data_plane::server::{Settings as DpSettings, Source, Worker};
use switchyard_proto::v1 as pb;
use switchyard_shared::args::{CredentialArgs, load_master_key};
use switchyard_shared::auth::Authorizer;
use switchyard_shared::seal::{MasterKey, MasterKeys};

pub async fn run(
    listen: SocketAddr,
    inference_listen: SocketAddr,
    metrics_listen: String,
    http_listen: String,
    data_dir: PathBuf,
    credentials: CredentialArgs,
    export_spans: bool,
) -> anyhow::Result<()> {
    let rules = credentials.rules().map_err(anyhow::Error::msg)?;
    let metrics_at =
        switchyard_shared::metrics::parse_listen(&metrics_listen).map_err(anyhow::Error::msg)?;
    let http_at = switchyard_shared::metrics::parse_listen_flag("--http-listen", &http_listen)
        .map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let key_path = data_dir.join("master.key");
    ensure_master_key(&key_path)?;
    let master_key = load_master_key(None, Some(&key_path)).map_err(anyhow::Error::msg)?;
    let db_path = data_dir.join("switchyard.db");
    let settings = Settings {
        database_url: format!("sqlite://{}?mode=rwc", db_path.display()),
        bus: BusSettings::Local,
        auth: Authorizer::disabled(),
        master_keys: master_key.clone().map(|k| MasterKeys::new(k, None)),
        credential_rules: rules.clone(),
        max_message_bytes: 1 << 20,
        run_migrations: true,
        shutdown_grace: Duration::from_secs(5),
    };
    let mut cp = ControlPlane::build(settings).await?;
    // One registry, one port: both planes' metrics.
    let mut registry = prometheus_client::registry::Registry::default();
    cp.register_metrics(&mut registry);
    seed_demo(cp.store()).await?;
    let bus = cp
        .local_bus()
        .context("the embedded control plane has no in-process bus")?;

    let mut dp = DpSettings::new(Source::Local(bus.snapshot.subscribe()));
    dp.master_keys = master_key.map(|k| MasterKeys::new(k, None));
    dp.credential_rules = rules;
    // The embedded default is for one machine: no caller keys needed (the
    // worker logs that authentication is off).
    dp.no_auth = true;
    dp.shutdown_grace = Duration::from_secs(5);
    dp.export_spans = export_spans;
    dp.metrics = switchyard_data_plane::observe::Metrics::register(&mut registry);
    switchyard_shared::metrics::start(metrics_at, registry)
        .await
        .with_context(|| format!("serve metrics on {metrics_listen}"))?;

    let cp_listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let dp_listener = tokio::net::TcpListener::bind(inference_listen)
        .await
        .with_context(|| format!("listen on {inference_listen}"))?;
    let (cp_addr, dp_addr) = (cp_listener.local_addr()?, dp_listener.local_addr()?);
    let mut http_addr = String::from("off");
    if let Some(at) = http_at {
        let l = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("listen for HTTP on {at}"))?;
        http_addr = l.local_addr()?.to_string();
        dp.http = Some(l);
    }
    eprintln!(
        "\nSwitchyard dev is up (SQLite at {db}, in-process bus and health, no auth).\n\
         Control plane {cp_addr}, inference {dp_addr}, OpenAI-compatible HTTP {http_addr}. Try:\n  \
         grpcurl -plaintext {cp_addr} switchyard.v1.ControlPlane/ListPools\n  \
         grpcurl -plaintext {dp_addr} switchyard.v1.Inference/ListModels\n  \
         grpcurl -plaintext -d '{{\"pool\":\"demo\",\"window_seconds\":300}}' {dp_addr} switchyard.v1.Inference/GetPoolStats\n  \
         curl -s http://{metrics_listen}/metrics\n  \
         curl -s http://{http_addr}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"demo\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n  \
         grpcurl -plaintext -d '{{\"model\":\"demo\",\"messages\":[{{\"role\":\"ROLE_USER\",\"content\":\"hi\"}}]}}' {dp_addr} switchyard.v1.Inference/GenerateStream\n",
        db = db_path.display()
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = {
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = switchyard_shared::shutdown::signal() => stop.cancel(),
                () = stop.cancelled() => {}
            }
        }
    };
    let dp_stop = stop.clone().cancelled_owned();
    let dp_serve = async move { Worker::build(dp_listener, dp).await?.run(dp_stop).await };
    let (cp_done, dp_done, ()) = tokio::join!(
        cp.serve(cp_listener, stop.clone().cancelled_owned()),
        dp_serve,
        signal,
    );
    cp_done?;
    dp_done?;
    Ok(())
}

/// A master key for the embedded default, generated once, readable by the owner only.
fn ensure_master_key(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    std::io::Write::write_all(&mut f, MasterKey::generate_base64().as_bytes())?;
    Ok(())
}

/// On an empty store: a mock provider and a pool `demo` of three mock members.
async fn seed_demo(store: &Store) -> anyhow::Result<()> {
    if store.revision().await? > 0 {
        return Ok(());
    }
    store
        .create_provider(Some(pb::Provider {
            name: "mock".into(),
            kind: pb::ProviderKind::Mock.into(),
            ..Default::default()
        }))
        .await?;
    store
        .create_pool(Some(pb::Pool {
            name: "demo".into(),
            strategy: pb::Strategy::RoundRobin.into(),
            description: "demo pool of mock upstreams".into(),
            ..Default::default()
        }))
        .await?;
    for model in ["mock-a", "mock-b", "mock-c"] {
        store
            .create_member(Some(pb::Member {
                pool: "demo".into(),
                provider: "mock".into(),
                upstream_model: model.into(),
                ..Default::default()
            }))
            .await?;
    }
    tracing::info!("seeded the demo pool");
    Ok(())
}
