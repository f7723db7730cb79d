//! The operator commands: they talk gRPC to the control plane (and, for
//! health, to a data-plane worker) like any other client.

pub mod apply;
pub mod callers;
pub mod callers_view;
pub mod client;
pub mod context;
pub mod context_cmd;
pub mod create;
pub mod describe;
pub mod edit;
pub mod export;
pub mod get;
pub mod output;
pub mod tiers;
pub mod validate;
pub mod watch;

/// A file's text, or stdin's for `-`. A command reads its one input file
/// once, before any network work: blocking is fine here.
#[allow(clippy::disallowed_methods)]
pub fn read_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("read stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}
