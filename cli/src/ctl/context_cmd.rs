//! `switchyard context set|use|list|delete`: the contexts file, edited.

use clap::Subcommand;

use super::client::ConnArgs;
use super::context::{load, save};
use super::output::{Table, dash};

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
