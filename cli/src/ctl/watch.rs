//! `switchyard watch`: the change feed, one line per committed change, until
//! Ctrl-C or the server ends the stream.

use clap::Args;
use switchyard_proto::v1 as pb;

use super::client::{ConnArgs, refused};
use super::output::short;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  switchyard watch                    # live changes from now on\n  \
                        switchyard watch --since 42         # first the retained changes after revision 42\n  \
                        switchyard watch --from-earliest    # every change the server still keeps, then live\n\n\
                        Each line: REVISION TIME ACTOR ACTION RESOURCE NAME. A whole-config apply is one\n\
                        line (`applied config`) whose name summarises it."
)]
pub struct WatchArgs {
    /// Replay every change the server still retains, then follow live.
    #[arg(long, conflicts_with = "since")]
    pub from_earliest: bool,
    /// Replay the retained changes after this revision, then follow live.
    #[arg(long)]
    pub since: Option<u64>,
}

// Named from the enums, so a resource kind added later (callers) prints
// without a change here.
fn resource(v: i32) -> String {
    pb::ResourceType::try_from(v).map_or_else(
        |_| format!("resource#{v}"),
        |r| short(r.as_str_name(), "RESOURCE_TYPE_"),
    )
}

fn action(v: i32) -> String {
    pb::ChangeAction::try_from(v).map_or_else(
        |_| format!("action#{v}"),
        |a| short(a.as_str_name(), "CHANGE_ACTION_"),
    )
}

/// One change as a line: `REV  TIME  ACTOR  ACTION RESOURCE NAME`.
pub fn line(e: &pb::ChangeEvent) -> String {
    // Whole seconds: the feed is for people; the revision orders it.
    let time = e.commit_time.map_or_else(
        || "-".to_owned(),
        |t| {
            prost_types::Timestamp {
                seconds: t.seconds,
                nanos: 0,
            }
            .to_string()
        },
    );
    let actor = if e.actor.is_empty() { "-" } else { &e.actor };
    format!(
        "{:<6}  {:<20}  {:<10}  {} {} {}",
        e.revision,
        time,
        actor,
        action(e.action),
        resource(e.resource),
        e.name
    )
}

pub async fn run(conn: &ConnArgs, args: WatchArgs) -> anyhow::Result<()> {
    let mut cp = conn.control_plane().await?;
    let resp = cp
        .watch_changes(pb::WatchChangesRequest {
            since_revision: args.since.unwrap_or(0),
            from_earliest: args.from_earliest,
        })
        .await
        .map_err(refused)?;
    if let Some(from) = resp
        .metadata()
        .get("x-switchyard-replay-from")
        .and_then(|v| v.to_str().ok())
    {
        eprintln!("replaying from revision {from}");
    }
    let mut stream = resp.into_inner();
    println!(
        "{:<6}  {:<20}  {:<10}  ACTION RESOURCE NAME",
        "REV", "TIME", "ACTOR"
    );
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            msg = stream.message() => match msg.map_err(refused)? {
                Some(e) => println!("{}", line(&e)),
                None => {
                    eprintln!("the server ended the change feed");
                    return Ok(());
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_one_line() {
        let e = pb::ChangeEvent {
            revision: 7,
            resource: pb::ResourceType::Config.into(),
            action: pb::ChangeAction::Applied.into(),
            id: String::new(),
            name: "3 changes".into(),
            commit_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            actor: "ci".into(),
        };
        assert_eq!(
            line(&e),
            "7       2023-11-14T22:13:20Z  ci          applied config 3 changes"
        );
    }
}
