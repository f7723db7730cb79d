//! `switchyard apply -f FILE`: the control plane made to match the file in
//! one transaction and one revision (ApplyConfig), with the diff printed.

use std::path::PathBuf;

use clap::Args;
use switchyard_proto::v1 as pb;

use super::client::{ConnArgs, refused};
use super::read_file;
use crate::document;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  switchyard apply -f switchyard.yaml --dry-run   # show the diff\n  \
                        switchyard apply -f switchyard.yaml\n  \
                        switchyard apply -f switchyard.yaml --prune     # also delete what the file no longer names\n  \
                        switchyard apply -f switchyard.yaml --expected-revision 42"
)]
pub struct ApplyArgs {
    /// The config file (`-` for stdin).
    #[arg(short = 'f', long = "filename", id = "filename")]
    pub file: PathBuf,
    /// Also delete providers, pools, members and routes the file does not name.
    #[arg(long)]
    pub prune: bool,
    /// Print the changes (every server-side check included) but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse (exit 1) unless the config is still at this revision.
    #[arg(long)]
    pub expected_revision: Option<u64>,
    /// Print the server's answer as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(conn: &ConnArgs, args: ApplyArgs) -> anyhow::Result<()> {
    let text = read_file(&args.file)?;
    let doc = document::parse(&text, None).map_err(|problems| {
        for p in &problems {
            eprintln!("{}: {p}", args.file.display());
        }
        anyhow::anyhow!(
            "{} problem(s) in {}; nothing applied",
            problems.len(),
            args.file.display()
        )
    })?;
    let mut cp = conn.control_plane().await?;
    let r = cp
        .apply_config(pb::ApplyConfigRequest {
            config: Some(doc.to_proto()),
            prune: args.prune,
            dry_run: args.dry_run,
            expected_revision: args.expected_revision.unwrap_or(0),
        })
        .await
        .map_err(refused)?
        .into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json(&r))?);
    } else {
        print!("{}", render(&r, args.dry_run));
    }
    Ok(())
}

fn resource(c: &pb::ConfigChange) -> &'static str {
    match pb::ResourceType::try_from(c.resource).unwrap_or_default() {
        pb::ResourceType::Provider => "provider",
        pb::ResourceType::Pool => "pool",
        pb::ResourceType::Member => "member",
        pb::ResourceType::Route => "route",
        _ => "resource",
    }
}

fn action(c: &pb::ConfigChange) -> &'static str {
    match pb::ChangeAction::try_from(c.action).unwrap_or_default() {
        pb::ChangeAction::Created => "created",
        pb::ChangeAction::Updated => "updated",
        pb::ChangeAction::Deleted => "deleted",
        _ => "changed",
    }
}

/// The diff as an operator reads it: one block per resource, `+` for a
/// field a create sets, `~` for a field an update changes.
fn render(r: &pb::ApplyConfigResponse, dry_run: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for c in &r.changes {
        let _ = writeln!(out, "{} {}: {}", resource(c), c.name, action(c));
        for f in &c.fields {
            if f.from.is_empty() && c.action == pb::ChangeAction::Created as i32 {
                let _ = writeln!(out, "  + {}: {}", f.field, f.to);
            } else {
                let _ = writeln!(out, "  ~ {}: {} -> {}", f.field, show(&f.from), show(&f.to));
            }
        }
    }
    if !r.unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "not in the file, left as they are (--prune deletes them): {}",
            r.unmanaged.join(", ")
        );
    }
    let n = r.changes.len();
    let line = if n == 0 {
        format!(
            "no changes: the config already matches (revision {})",
            r.revision
        )
    } else if dry_run {
        format!(
            "dry run: {n} change(s), nothing written (revision stays {})",
            r.revision
        )
    } else {
        format!("applied {n} change(s) as revision {}", r.revision)
    };
    let _ = writeln!(out, "{line}");
    out
}

fn show(v: &str) -> &str {
    if v.is_empty() { "\"\"" } else { v }
}

fn json(r: &pb::ApplyConfigResponse) -> serde_json::Value {
    serde_json::json!({
        "applied": r.applied,
        "revision": r.revision,
        "changes": r.changes.iter().map(|c| serde_json::json!({
            "resource": resource(c),
            "action": action(c),
            "name": c.name,
            "fields": c.fields.iter().map(|f| serde_json::json!({
                "field": f.field, "from": f.from, "to": f.to,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "unmanaged": r.unmanaged,
    })
}
