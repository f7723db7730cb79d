//! `switchyard create`: one Create RPC per resource, then one line saying
//! what was created.

use clap::{Args, Subcommand};
use switchyard_proto::v1 as pb;

use super::client::{ConnArgs, one};
use super::output::{self, KindArg, StatusArg, StrategyArg};

const CREATE_EXAMPLES: &str = "\
Examples:
  switchyard create provider openai --kind openai --base-url https://api.openai.com/v1 --credential env:SWITCHYARD_CRED_OPENAI
  switchyard create provider openai --kind openai --base-url https://api.openai.com/v1 --credential env:SWITCHYARD_CRED_OPENAI --key batch=env:SWITCHYARD_CRED_OPENAI_BATCH
  switchyard create pool coding --strategy weighted --description 'code completion'
  switchyard create member --pool coding --provider openai --model gpt-4o-mini --weight 3
  switchyard create member --pool coding --provider openai --model gpt-4o --max-concurrency 8 --context-tokens 128000 --key batch
  switchyard create route chat --tier pool:coding --tier direct:openai/gpt-4o --backup-tier pool:cheap
  switchyard create route smart --tier 'pool:vision when=images' --tier 'pool:long when=prompt>=64000' --tier pool:coding
  switchyard create caller billing --model chat --rpm 600   # prints its key once";

#[derive(Subcommand, Debug)]
#[command(after_help = CREATE_EXAMPLES)]
pub enum CreateCmd {
    /// An upstream endpoint.
    #[command(after_help = CREATE_EXAMPLES)]
    Provider {
        name: String,
        #[arg(long, value_enum)]
        kind: KindArg,
        /// http(s)://host[:port][/path]; not needed for mock.
        #[arg(long, default_value = "")]
        base_url: String,
        /// Where the data plane finds the key: env:NAME (NAME under SWITCHYARD_CRED_, or the workers' --credential-env-prefix) or file:/path (inside their --credential-dir).
        #[arg(long, conflicts_with = "credential_stdin")]
        credential: Option<String>,
        /// Read an inline key from stdin (stored sealed; never on the command line).
        #[arg(long)]
        credential_stdin: bool,
        /// A further named key, NAME=env:VAR or NAME=file:/path (repeat for more);
        /// each is its own runtime target. `--credential` is the key named default.
        // Parsed after clap, whose errors would echo a pasted secret.
        #[arg(long = "key")]
        keys: Vec<String>,
    },
    /// A virtual model name served by members.
    #[command(after_help = CREATE_EXAMPLES)]
    Pool {
        name: String,
        /// How members are picked (default round_robin).
        #[arg(long, value_enum)]
        strategy: Option<StrategyArg>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// A provider's model in a pool.
    #[command(after_help = CREATE_EXAMPLES)]
    Member {
        #[arg(long)]
        pool: String,
        #[arg(long)]
        provider: String,
        /// The model id the upstream knows.
        #[arg(long)]
        model: String,
        /// 1-10000 (share under the weighted strategy; default 1).
        #[arg(long)]
        weight: Option<u32>,
        /// -1000..1000; higher goes first under the priority strategy (default 0).
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
        /// draining: no new requests, in-flight ones finish; inactive: none at all.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        #[command(flatten)]
        routing: MemberRouting,
    },
    /// A name over ordered tiers of pools or direct provider/model pairs.
    #[command(after_help = CREATE_EXAMPLES)]
    Route {
        name: String,
        /// pool:NAME or direct:PROVIDER/MODEL, tried in the order given; add
        /// ' when=images+reasoning+tools+prompt>=N' to take only such requests.
        #[arg(long = "tier", required = true)]
        tiers: Vec<String>,
        /// Tiers tried only after every primary tier.
        #[arg(long = "backup-tier")]
        backup_tiers: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Who may call the data plane: prints its key, once.
    Caller(super::callers::CreateCallerArgs),
}

/// A member's routing settings on create.
#[derive(Args, Debug)]
pub struct MemberRouting {
    /// Requests in flight at once, fleet-wide (1-100000; default no cap).
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// The model's context window in tokens (1-10000000): longer requests skip it.
    #[arg(long)]
    context_tokens: Option<u64>,
    /// Use only this key of the provider (default or a key name; default every key).
    #[arg(long, default_value = "")]
    key: String,
}

/// `NAME=env:VAR` or `NAME=file:/path`; the refusal never shows the value.
fn named_key(s: &str) -> anyhow::Result<pb::ProviderKey> {
    match s.split_once('=') {
        Some((name, r)) if r.starts_with("env:") || r.starts_with("file:") => Ok(pb::ProviderKey {
            name: name.into(),
            credential: Some(pb::CredentialInput {
                source: Some(pb::credential_input::Source::Reference(r.into())),
            }),
            credential_info: None,
        }),
        _ => anyhow::bail!(
            "--key: use NAME=env:VAR or NAME=file:/path (a key itself is never taken on the command line)"
        ),
    }
}
pub async fn create(conn: &ConnArgs, cmd: CreateCmd) -> anyhow::Result<()> {
    let mut cp = conn.control_plane().await?;
    match cmd {
        CreateCmd::Provider {
            name,
            kind,
            base_url,
            credential,
            credential_stdin,
            keys,
        } => {
            let source = match (credential, credential_stdin) {
                (Some(r), _) if r.starts_with("env:") || r.starts_with("file:") => {
                    Some(pb::credential_input::Source::Reference(r))
                }
                (Some(_), _) => anyhow::bail!(
                    "--credential takes a reference (env:NAME or file:/path); pass a key itself with --credential-stdin"
                ),
                (None, true) => {
                    let mut key = String::new();
                    std::io::stdin().read_line(&mut key)?;
                    let key = key.trim().to_owned();
                    if key.is_empty() {
                        anyhow::bail!("--credential-stdin: stdin held no key");
                    }
                    Some(pb::credential_input::Source::Inline(key))
                }
                (None, false) => None,
            };
            let p = one(cp
                .create_provider(pb::CreateProviderRequest {
                    provider: Some(pb::Provider {
                        name,
                        kind: pb::ProviderKind::from(kind).into(),
                        base_url,
                        credential: source.map(|s| pb::CredentialInput { source: Some(s) }),
                        keys: keys
                            .iter()
                            .map(|k| named_key(k))
                            .collect::<anyhow::Result<_>>()?,
                        ..Default::default()
                    }),
                })
                .await)?;
            println!(
                "provider {} created (kind {}, credential {}, keys {})",
                p.name,
                output::kind(p.kind),
                output::credential(p.credential_info.as_ref()),
                output::keys(&p.keys)
            );
        }
        CreateCmd::Pool {
            name,
            strategy,
            description,
        } => {
            let p = one(cp
                .create_pool(pb::CreatePoolRequest {
                    pool: Some(pb::Pool {
                        name,
                        strategy: strategy.map_or(0, |s| pb::Strategy::from(s).into()),
                        description,
                        ..Default::default()
                    }),
                })
                .await)?;
            println!(
                "pool {} created (strategy {})",
                p.name,
                output::strategy(p.strategy)
            );
        }
        CreateCmd::Member {
            pool,
            provider,
            model,
            weight,
            priority,
            status,
            routing,
        } => {
            let m = one(cp
                .create_member(pb::CreateMemberRequest {
                    member: Some(pb::Member {
                        pool,
                        provider,
                        upstream_model: model,
                        weight: weight.unwrap_or(0),
                        priority: priority.unwrap_or(0),
                        status: status.map_or(0, |s| pb::MemberStatus::from(s).into()),
                        max_concurrency: routing.max_concurrency,
                        context_tokens: routing.context_tokens,
                        key: routing.key,
                        ..Default::default()
                    }),
                })
                .await)?;
            println!(
                "member {} created: {}/{}/{} (weight {}, priority {}, {})",
                m.id,
                m.pool_name,
                m.provider_name,
                m.upstream_model,
                m.weight,
                m.priority,
                output::status(m.status)
            );
        }
        CreateCmd::Route {
            name,
            tiers,
            backup_tiers,
            description,
        } => {
            let mut all = Vec::new();
            for t in &tiers {
                all.push(output::parse_tier(t, false)?);
            }
            for t in &backup_tiers {
                all.push(output::parse_tier(t, true)?);
            }
            let r = one(cp
                .create_route(pb::CreateRouteRequest {
                    route: Some(pb::Route {
                        name,
                        tiers: all,
                        description,
                        ..Default::default()
                    }),
                })
                .await)?;
            println!("route {} created: {}", r.name, output::tiers(&r.tiers));
        }
        CreateCmd::Caller(args) => super::callers::create(&mut cp, args).await?,
    }
    Ok(())
}
