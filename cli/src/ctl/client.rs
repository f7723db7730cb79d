//! Where the servers are and how to reach them: flags, environment, then
//! the current context of the config file.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};
use switchyard_proto::v1::control_plane_client::ControlPlaneClient;
use switchyard_proto::v1::inference_client::InferenceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Connection flags, shared by every operator command.
#[derive(Args, Clone, Debug, Default)]
pub struct ConnArgs {
    /// Control-plane address, e.g. http://127.0.0.1:50051 (https:// for TLS).
    #[arg(long, global = true, env = "SWITCHYARD_SERVER")]
    pub server: Option<String>,
    /// Data-plane (inference) address, for health and traffic in `describe`/`get members`.
    #[arg(long, global = true, env = "SWITCHYARD_INFERENCE_SERVER")]
    pub inference_server: Option<String>,
    /// Bearer token (an admin token to write, a reader token to look).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_TOKEN",
        hide_env_values = true,
        value_parser = switchyard_shared::args::secret
    )]
    pub token: Option<SecretString>,
    /// Caller key for the data plane (health and traffic in `get`/`describe`);
    /// without it the --token is sent there too.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CALLER_KEY",
        hide_env_values = true,
        value_parser = switchyard_shared::args::secret
    )]
    pub caller_key: Option<SecretString>,
    /// CA certificate (PEM) to verify an https:// server with, instead of the public web roots.
    #[arg(long, global = true, env = "SWITCHYARD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Use this context of the contexts file instead of its current one.
    #[arg(long, global = true, env = "SWITCHYARD_CONTEXT")]
    pub context: Option<String>,
    #[command(flatten)]
    pub config: super::context::ConfigPath,
}

/// Where to connect and with what, once flags, environment, the context and
/// the defaults are weighed (in that order).
struct Target {
    server: String,
    inference: String,
    token: Option<String>,
    ca_file: Option<PathBuf>,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Cp = ControlPlaneClient<InterceptedService<Channel, Bearer>>;
pub type Dp = InferenceClient<InterceptedService<Channel, Bearer>>;

const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";
const DEFAULT_INFERENCE: &str = "http://127.0.0.1:50052";

impl ConnArgs {
    async fn target(&self) -> anyhow::Result<Target> {
        let (name, ctx) = super::context::selected(&self.config, self.context.as_deref())
            .await?
            .unwrap_or_default();
        let token = match (
            self.token
                .as_ref()
                .map(|t| t.expose_secret())
                .filter(|t| !t.trim().is_empty()),
            &ctx.token_env,
        ) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(var)) => Some(token_from_env(&name, var)?),
            (None, None) => None,
        };
        Ok(Target {
            server: (self.server.clone().or(ctx.server)).unwrap_or_else(|| DEFAULT_SERVER.into()),
            inference: (self.inference_server.clone().or(ctx.inference_server))
                .unwrap_or_else(|| DEFAULT_INFERENCE.into()),
            token,
            ca_file: self.ca_file.clone().or(ctx.ca_file),
        })
    }

    pub async fn control_plane(&self) -> anyhow::Result<Cp> {
        let t = self.target().await?;
        let ch = channel(&t.server, t.ca_file.as_deref()).await?;
        Ok(ControlPlaneClient::with_interceptor(
            ch,
            bearer(t.token.as_deref())?,
        ))
    }

    pub async fn inference(&self) -> anyhow::Result<Dp> {
        let t = self.target().await?;
        let ch = channel(&t.inference, t.ca_file.as_deref()).await?;
        let key = self
            .caller_key
            .as_ref()
            .map(|k| k.expose_secret())
            .filter(|k| !k.trim().is_empty())
            .or(t.token.as_deref());
        Ok(InferenceClient::with_interceptor(ch, bearer(key)?))
    }
}

/// The token a context names by its environment variable.
fn token_from_env(context: &str, var: &str) -> anyhow::Result<String> {
    // The variable's name is only known once the contexts file is read, so
    // clap cannot read it in config parsing.
    #[allow(clippy::disallowed_methods)]
    let value = std::env::var(var);
    match value {
        Ok(t) if !t.trim().is_empty() => Ok(t),
        _ => anyhow::bail!(
            "context {context} takes its token from ${var}, which is not set (or pass --token)"
        ),
    }
}

fn bearer(token: Option<&str>) -> anyhow::Result<Bearer> {
    match token.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(Bearer(None)),
        Some(t) => {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| anyhow::anyhow!("the token has characters a header cannot carry"))?;
            Ok(Bearer(Some(v)))
        }
    }
}

/// A connected channel; https:// servers are verified against `ca_file`,
/// or the public web roots without one.
async fn channel(addr: &str, ca_file: Option<&Path>) -> anyhow::Result<Channel> {
    let addr = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(addr.clone())
        .with_context(|| format!("'{addr}' is not a server address"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if endpoint.uri().scheme_str() == Some("https") {
        let tls = match ca_file {
            Some(path) => {
                let pem = tokio::fs::read(path)
                    .await
                    .with_context(|| format!("read the CA file {}", path.display()))?;
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .with_context(|| format!("TLS settings for {addr}"))?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))
}

/// A server's refusal as the operator should read it: the code and the
/// server's message, nothing else.
pub fn refused(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// Every page of a List RPC, in order.
pub async fn pages<T, Fut>(mut fetch: impl FnMut(String) -> Fut) -> anyhow::Result<Vec<T>>
where
    Fut: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = fetch(token.clone()).await.map_err(refused)?;
        out.extend(items);
        // A token that does not move would loop forever: stop there.
        if next.is_empty() || next == token {
            return Ok(out);
        }
        token = next;
    }
}

pub fn get(name: &str) -> switchyard_proto::v1::GetRequest {
    switchyard_proto::v1::GetRequest {
        id_or_name: name.into(),
    }
}

/// A unary call's answer, or the server's refusal.
pub fn one<T>(r: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    r.map(tonic::Response::into_inner).map_err(refused)
}
