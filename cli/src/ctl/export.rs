//! `switchyard export`: the whole config as a file `apply` accepts.

use clap::{Args, ValueEnum};
use switchyard_proto::v1 as pb;

use super::client::{ConnArgs, refused};
use crate::document::Document;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Format {
    #[default]
    Yaml,
    Json,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  switchyard export > switchyard.yaml\n  \
                        switchyard export -o json | jq '.pools[].name'")]
pub struct ExportArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
}

pub async fn run(conn: &ConnArgs, args: ExportArgs) -> anyhow::Result<()> {
    let mut cp = conn.control_plane().await?;
    let r = cp
        .export_config(pb::ExportConfigRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    let doc = Document::from_proto(r.config.unwrap_or_default());
    match args.output {
        Format::Yaml => print!("{}", doc.to_yaml()?),
        Format::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
    }
    // Not in the file, so two exports of the same config are identical.
    eprintln!(
        "exported revision {} (apply with --expected-revision {} to refuse if it changed meanwhile)",
        r.revision, r.revision
    );
    Ok(())
}
