//! Named contexts: where the servers are, kept in a small YAML file so an
//! operator need not repeat `--server` (`switchyard context set|use|list`).
//! The file names the environment variable holding a token, never a token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::client::ConnArgs;
use super::output::{Table, dash};

/// Where the config file is: `--config`, SWITCHYARD_CONFIG, then
/// `$XDG_CONFIG_HOME/switchyard/config.yaml`, then `~/.config/switchyard/config.yaml`.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigPath {
    /// The contexts file (default: $XDG_CONFIG_HOME/switchyard/config.yaml or ~/.config/switchyard/config.yaml).
    #[arg(long = "config", global = true, env = "SWITCHYARD_CONFIG")]
    pub file: Option<PathBuf>,
    // Read here, in config parsing, rather than deep inside.
    #[arg(long, global = true, hide = true, env = "XDG_CONFIG_HOME")]
    pub xdg_config_home: Option<PathBuf>,
    #[arg(long, global = true, hide = true, env = "HOME")]
    pub home_dir: Option<PathBuf>,
}

impl ConfigPath {
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(f) = &self.file {
            return Ok(f.clone());
        }
        let base = match (&self.xdg_config_home, &self.home_dir) {
            (Some(x), _) if x.is_absolute() => x.clone(),
            (_, Some(h)) if !h.as_os_str().is_empty() => h.join(".config"),
            _ => anyhow::bail!("cannot tell where the contexts file is: set HOME or pass --config"),
        };
        Ok(base.join("switchyard").join("config.yaml"))
    }
}

/// The contexts file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The context commands use when `--context` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One named set of servers. No token: `token_env` names the variable that holds it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The file at `path`, or an empty one when there is none.
pub async fn load(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_saphyr::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (the file holds current_context and contexts of server, inference_server, token_env, ca_file)",
            path.display()
        )
    })
}

async fn save(path: &Path, file: &ConfigFile) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("create {}", dir.display()))?;
    }
    let text = serde_saphyr::to_string(file)?;
    // Written aside and renamed: a reader never sees half a file.
    let tmp = path.with_extension("yaml.tmp");
    tokio::fs::write(&tmp, text)
        .await
        .with_context(|| format!("write {}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("write {}", path.display()))
}

/// The context to use: `--context NAME` (which must exist), else the
/// file's current one, else none.
pub async fn selected(
    config: &ConfigPath,
    name: Option<&str>,
) -> anyhow::Result<Option<(String, Context)>> {
    // Without --context and with no file to be found, there is nothing to read.
    let path = match (name, config.path()) {
        (None, Err(_)) => return Ok(None),
        (_, p) => p?,
    };
    let file = load(&path).await?;
    let Some(name) = name.map(str::to_owned).or(file.current_context.clone()) else {
        return Ok(None);
    };
    match file.contexts.get(&name) {
        Some(c) => Ok(Some((name, c.clone()))),
        None => anyhow::bail!(
            "no context named '{name}' in {} (see `switchyard context list`)",
            path.display()
        ),
    }
}

const EXAMPLES: &str = "\
Examples:
  switchyard context set prod --server https://switchyard.internal:50051 \\
      --inference-server https://switchyard.internal:50052 --token-env SWITCHYARD_PROD_TOKEN
  switchyard context use prod
  switchyard context list
  switchyard --context staging get pools      # one command against another context

Precedence: flags, then SWITCHYARD_* environment, then the context, then
the defaults (http://127.0.0.1:50051 and http://127.0.0.1:50052).";

#[derive(Subcommand, Debug)]
#[command(after_help = EXAMPLES)]
pub enum ContextCmd {
    /// Create or change a context: the global --server, --inference-server and
    /// --ca-file given with it are stored (fields not given keep their value).
    #[command(after_help = EXAMPLES)]
    Set {
        /// The context's name.
        name: String,
        /// The environment variable that holds the token (the token itself is never stored).
        #[arg(long)]
        token_env: Option<String>,
    },
    /// Make a context the one commands use.
    Use { name: String },
    /// List the contexts (`*` marks the current one).
    List,
    /// Remove a context.
    Delete { name: String },
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a variable's name, which a token is not.
fn is_env_name(v: &str) -> bool {
    v.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub async fn run(conn: &ConnArgs, cmd: ContextCmd) -> anyhow::Result<()> {
    let path = conn.config.path()?;
    let mut file = load(&path).await?;
    match cmd {
        ContextCmd::Set { name, token_env } => {
            if name.trim().is_empty() {
                anyhow::bail!("a context needs a name");
            }
            if let Some(v) = &token_env
                && !is_env_name(v)
            {
                anyhow::bail!("--token-env takes the name of an environment variable, not a token");
            }
            let created = !file.contexts.contains_key(&name);
            let ctx = file.contexts.entry(name.clone()).or_default();
            if let Some(s) = &conn.server {
                ctx.server = Some(s.clone());
            }
            if let Some(s) = &conn.inference_server {
                ctx.inference_server = Some(s.clone());
            }
            if let Some(v) = token_env {
                ctx.token_env = Some(v);
            }
            if let Some(f) = &conn.ca_file {
                ctx.ca_file = Some(std::path::absolute(f).unwrap_or_else(|_| f.clone()));
            }
            // The first context becomes the current one: there is no other to use.
            let current = file.current_context.is_none();
            if current {
                file.current_context = Some(name.clone());
            }
            save(&path, &file).await?;
            let what = if created { "created" } else { "changed" };
            let note = if current { " and made current" } else { "" };
            println!("context {name} {what}{note} ({})", path.display());
        }
        ContextCmd::Use { name } => {
            if !file.contexts.contains_key(&name) {
                anyhow::bail!(
                    "no context named '{name}' in {} (see `switchyard context list`)",
                    path.display()
                );
            }
            file.current_context = Some(name.clone());
            save(&path, &file).await?;
            println!("now using context {name}");
        }
        ContextCmd::Delete { name } => {
            if file.contexts.remove(&name).is_none() {
                anyhow::bail!("no context named '{name}' in {}", path.display());
            }
            if file.current_context.as_deref() == Some(name.as_str()) {
                file.current_context = None;
            }
            save(&path, &file).await?;
            println!("context {name} deleted");
        }
        ContextCmd::List => {
            if file.contexts.is_empty() {
                eprintln!(
                    "no contexts in {} (add one with `switchyard context set NAME --server URL`)",
                    path.display()
                );
                return Ok(());
            }
            let mut t = Table::new(&[
                "CURRENT",
                "NAME",
                "SERVER",
                "INFERENCE_SERVER",
                "TOKEN_ENV",
                "CA_FILE",
            ]);
            for (name, c) in &file.contexts {
                let current = file.current_context.as_deref() == Some(name.as_str());
                t.row(vec![
                    if current { "*" } else { "" }.into(),
                    name.clone(),
                    dash(c.server.as_deref().unwrap_or_default()).into(),
                    dash(c.inference_server.as_deref().unwrap_or_default()).into(),
                    dash(c.token_env.as_deref().unwrap_or_default()).into(),
                    c.ca_file
                        .as_ref()
                        .map_or_else(|| "-".into(), |p| p.display().to_string()),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(())
}
