//! Structured logs through `tracing`, and spans exported over OTLP when an
//! endpoint is configured (off otherwise).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "log format must be 'text' or 'json', not '{other}'"
            )),
        }
    }
}

/// How spans travel to the collector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, `/v1/traces`).
    HttpProtobuf,
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" | "http" => Ok(Self::HttpProtobuf),
            other => Err(format!(
                "OTLP protocol must be 'grpc' or 'http/protobuf', not '{other}'"
            )),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TelemetryConfig {
    pub service_name: &'static str,
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter; `info` when empty.
    pub log_filter: String,
    /// OTLP endpoint (`http://collector:4317`); no export when `None`.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    /// PEM CA bundle for an `https://` gRPC endpoint (default: webpki roots).
    pub otlp_ca_file: Option<std::path::PathBuf>,
}

/// Flushes exported spans when dropped: drop it last.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(err) = p.shutdown()
        {
            eprintln!("telemetry shutdown: {err}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter: {0}")]
    Filter(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("cannot read the OTLP CA file {path}: {error}")]
    CaFile { path: String, error: String },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter_text = if cfg.log_filter.is_empty() {
        "info"
    } else {
        cfg.log_filter.as_str()
    };
    // Postgres NOTICEs ("relation already exists, skipping" at every start's
    // migration check) are not news; a filter that names sqlx decides itself.
    let filter_text = if filter_text.contains("sqlx") {
        filter_text.to_owned()
    } else {
        format!("{filter_text},sqlx::postgres::notice=warn")
    };
    let filter =
        EnvFilter::try_new(&filter_text).map_err(|e| TelemetryError::Filter(e.to_string()))?;
    // Colour only on a terminal: a file or a log shipper gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    };
    let (otel, provider) = match &cfg.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let exporter = exporter(cfg, endpoint)?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder_empty()
                        .with_service_name(cfg.service_name)
                        .build(),
                )
                .build();
            let tracer = provider.tracer(cfg.service_name);
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                Some(provider),
            )
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

/// The span exporter for `endpoint`, over the configured protocol.
fn exporter(
    cfg: &TelemetryConfig,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    use opentelemetry_otlp::WithTonicConfig as _;
    let built = match cfg.otlp_protocol {
        OtlpProtocol::Grpc => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint);
            if endpoint.starts_with("https://") {
                let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
                if let Some(path) = &cfg.otlp_ca_file {
                    // Config parsing, once at start-up.
                    #[allow(clippy::disallowed_methods)]
                    let pem = std::fs::read(path).map_err(|e| TelemetryError::CaFile {
                        path: path.display().to_string(),
                        error: e.to_string(),
                    })?;
                    tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
                }
                b = b.with_tls_config(tls);
            }
            b.build()
        }
        OtlpProtocol::HttpProtobuf => {
            if cfg.otlp_ca_file.is_some() {
                return Err(TelemetryError::Exporter(
                    "--otlp-ca-file applies to the grpc protocol only; for http/protobuf, add the CA to the system's roots".into(),
                ));
            }
            // The collector's traces path, unless the endpoint names one.
            // https:// collectors: rustls over ring, the system's roots.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
                endpoint.to_owned()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .build()
        }
    };
    built.map_err(|e| TelemetryError::Exporter(e.to_string()))
}
