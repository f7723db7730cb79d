//! One-off edits: `switchyard delete|set`, each one Delete or Update RPC (an
//! update's mask names exactly the flags given), then one line saying what
//! changed. `switchyard create` is its neighbour `create`.

use clap::{Args, Subcommand, ValueEnum};
use switchyard_proto::v1 as pb;

use super::callers::{Limit, limit};
use super::client::{ConnArgs, get, one, refused};
use super::get::find_member;
use super::output::{self, StatusArg, StrategyArg, on};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeleteKind {
    Provider,
    Pool,
    Member,
    Route,
    Caller,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  switchyard delete route chat\n  \
                        switchyard delete member demo/mock/mock-a      # or by id\n  \
                        switchyard delete pool coding --force          # also drop the route tiers naming it\n  \
                        switchyard delete provider openai --force      # also its members and direct tiers\n  \
                        switchyard delete caller billing               # its key is refused at once")]
pub struct DeleteArgs {
    #[arg(value_enum)]
    pub kind: DeleteKind,
    /// Name or id (members: id, or pool/provider/model).
    pub name: String,
    /// Providers and pools: also delete what uses them (members, route tiers).
    #[arg(long)]
    pub force: bool,
}

const SET_EXAMPLES: &str = "\
Examples:
  switchyard set member 0193b0c4-5f1e-7c3a-9d2e-4a1b2c3d4e5f --status draining
  switchyard set member demo/mock/mock-a --weight 5 --priority 10
  switchyard set pool demo --strategy priority
  switchyard set pool demo --enabled false
  switchyard set caller billing --rpm 1200 --tpm none";

#[derive(Subcommand, Debug)]
#[command(after_help = SET_EXAMPLES)]
pub enum SetCmd {
    /// Change a member's status, weight or priority.
    #[command(after_help = SET_EXAMPLES)]
    Member {
        /// Member id, or pool/provider/model.
        id: String,
        /// draining: no new requests, in-flight ones finish; inactive: none at all.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// 1-10000 (share under the weighted strategy; default 1).
        #[arg(long)]
        weight: Option<u32>,
        /// -1000..1000; higher goes first under the priority strategy (default 0).
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
        /// Requests in flight at once, fleet-wide (1-100000), or none.
        #[arg(long, value_parser = limit)]
        max_concurrency: Option<Limit>,
        /// The model's context window in tokens (1-10000000), or none.
        #[arg(long, value_parser = limit)]
        context_tokens: Option<Limit>,
        /// Use only this key of the provider (default or a key name); '' for every key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Change a pool's strategy, enabled flag or description.
    #[command(after_help = SET_EXAMPLES)]
    Pool {
        name: String,
        /// How members are picked.
        #[arg(long, value_enum)]
        strategy: Option<StrategyArg>,
        /// A disabled pool serves nothing.
        #[arg(long, value_parser = clap::value_parser!(bool))]
        enabled: Option<bool>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Change a caller's scope, limits, budgets, expiry or enabled flag.
    Caller(super::callers::SetCallerArgs),
}

pub async fn delete(conn: &ConnArgs, args: DeleteArgs) -> anyhow::Result<()> {
    let unforced = [DeleteKind::Member, DeleteKind::Route, DeleteKind::Caller];
    if args.force && unforced.contains(&args.kind) {
        anyhow::bail!("--force applies to providers and pools");
    }
    let mut cp = conn.control_plane().await?;
    let (id_or_name, force, name) = (args.name.clone(), args.force, args.name);
    let what = match args.kind {
        DeleteKind::Provider => {
            let req = pb::DeleteProviderRequest {
                id_or_name,
                force,
                etag: String::new(),
            };
            cp.delete_provider(req).await.map_err(refused)?;
            format!("provider {name}")
        }
        DeleteKind::Pool => {
            let req = pb::DeletePoolRequest {
                id_or_name,
                force,
                etag: String::new(),
            };
            cp.delete_pool(req).await.map_err(refused)?;
            format!("pool {name}")
        }
        DeleteKind::Member => {
            let m = find_member(&cp, &name).await?;
            let req = pb::DeleteMemberRequest {
                id: m.id.clone(),
                etag: String::new(),
            };
            cp.delete_member(req).await.map_err(refused)?;
            format!(
                "member {} ({}/{}/{})",
                m.id, m.pool_name, m.provider_name, m.upstream_model
            )
        }
        DeleteKind::Route => {
            let req = pb::DeleteRouteRequest {
                id_or_name,
                etag: String::new(),
            };
            cp.delete_route(req).await.map_err(refused)?;
            format!("route {name}")
        }
        DeleteKind::Caller => {
            let req = pb::DeleteCallerRequest {
                id_or_name,
                etag: String::new(),
            };
            cp.delete_caller(req).await.map_err(refused)?;
            format!("caller {name}")
        }
    };
    println!("{what} deleted");
    Ok(())
}

pub async fn set(conn: &ConnArgs, cmd: SetCmd) -> anyhow::Result<()> {
    let mut cp = conn.control_plane().await?;
    let mut paths = Vec::new();
    let mut changes = Vec::new();
    let mut change = |path: &str, from: String, to: String| {
        paths.push(path.to_owned());
        changes.push(format!("{path} {from} -> {to}"));
    };
    match cmd {
        SetCmd::Member {
            id,
            status,
            weight,
            priority,
            max_concurrency,
            context_tokens,
            key,
        } => {
            let cur = find_member(&cp, &id).await?;
            let mut m = pb::Member {
                id: cur.id.clone(),
                ..Default::default()
            };
            if let Some(s) = status {
                m.status = pb::MemberStatus::from(s).into();
                change(
                    "status",
                    output::status(cur.status),
                    output::status(m.status),
                );
            }
            if let Some(w) = weight {
                m.weight = w;
                change("weight", cur.weight.to_string(), w.to_string());
            }
            if let Some(p) = priority {
                m.priority = p;
                change("priority", cur.priority.to_string(), p.to_string());
            }
            if let Some(Limit(n)) = max_concurrency {
                m.max_concurrency = n.map(u32::try_from).transpose()?;
                let was = output::limit(cur.max_concurrency.map(u64::from));
                change("max_concurrency", was, output::limit(n));
            }
            if let Some(Limit(n)) = context_tokens {
                m.context_tokens = n;
                let was = output::limit(cur.context_tokens);
                change("context_tokens", was, output::limit(n));
            }
            if let Some(k) = key {
                let show = |k: &str| {
                    if k.is_empty() {
                        "every".to_owned()
                    } else {
                        k.to_owned()
                    }
                };
                change("key", show(&cur.key), show(&k));
                m.key = k;
            }
            if paths.is_empty() {
                anyhow::bail!(
                    "nothing to set: give --status, --weight, --priority, --max-concurrency, --context-tokens or --key"
                );
            }
            let update_mask = Some(prost_types::FieldMask { paths });
            cp.update_member(pb::UpdateMemberRequest {
                member: Some(m),
                update_mask,
            })
            .await
            .map_err(refused)?;
            println!(
                "member {} ({}/{}/{}) updated: {}",
                cur.id,
                cur.pool_name,
                cur.provider_name,
                cur.upstream_model,
                changes.join(", ")
            );
        }
        SetCmd::Pool {
            name,
            strategy,
            enabled,
            description,
        } => {
            let cur = one(cp.get_pool(get(&name)).await)?;
            let mut p = pb::Pool {
                id: cur.id.clone(),
                name: cur.name.clone(),
                ..Default::default()
            };
            if let Some(s) = strategy {
                p.strategy = pb::Strategy::from(s).into();
                change(
                    "strategy",
                    output::strategy(cur.strategy),
                    output::strategy(p.strategy),
                );
            }
            if let Some(e) = enabled {
                p.enabled = Some(e);
                change("enabled", on(cur.enabled).into(), on(p.enabled).into());
            }
            if let Some(d) = description {
                change(
                    "description",
                    format!("{:?}", cur.description),
                    format!("{d:?}"),
                );
                p.description = d;
            }
            if paths.is_empty() {
                anyhow::bail!("nothing to set: give --strategy, --enabled or --description");
            }
            let update_mask = Some(prost_types::FieldMask { paths });
            cp.update_pool(pb::UpdatePoolRequest {
                pool: Some(p),
                update_mask,
            })
            .await
            .map_err(refused)?;
            println!("pool {} updated: {}", cur.name, changes.join(", "));
        }
        SetCmd::Caller(args) => super::callers::set(&mut cp, args).await?,
    }
    Ok(())
}
