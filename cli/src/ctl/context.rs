//! Named contexts: where the servers are, kept in a small YAML file so an
//! operator need not repeat `--server` (`switchyard context set|use|list`).
//! The file names the environment variable holding a token, never a token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde::{Deserialize, Serialize};

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

pub async fn save(path: &Path, file: &ConfigFile) -> anyhow::Result<()> {
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
