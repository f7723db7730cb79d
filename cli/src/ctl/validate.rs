//! `switchyard validate -f FILE`: the file checked offline, every problem
//! with its line; exit 1 if there is any.

use std::path::PathBuf;

use clap::Args;
use switchyard_shared::args::CredentialArgs;

use super::read_file;
use crate::document;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  switchyard validate -f switchyard.yaml\n  \
                        switchyard export | switchyard validate -f -")]
pub struct ValidateArgs {
    /// The config file (`-` for stdin).
    #[arg(short = 'f', long = "filename", id = "filename")]
    pub file: PathBuf,
    /// The credential allow-list the workers and control plane use (same
    /// flags and environment): references outside it are problems.
    #[command(flatten)]
    pub credentials: CredentialArgs,
}

pub fn run(args: &ValidateArgs) -> anyhow::Result<()> {
    let text = read_file(&args.file)?;
    let rules = args.credentials.rules().map_err(anyhow::Error::msg)?;
    match document::parse(&text, Some(&rules)) {
        Ok(doc) => {
            let members: usize = doc.pools.iter().map(|p| p.members.len()).sum();
            println!(
                "{}: valid ({} providers, {} pools, {members} members, {} routes)",
                args.file.display(),
                doc.providers.len(),
                doc.pools.len(),
                doc.routes.len()
            );
            Ok(())
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{}: {p}", args.file.display());
            }
            anyhow::bail!("{} problem(s) in {}", problems.len(), args.file.display())
        }
    }
}
