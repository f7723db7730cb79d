//! `switchyard get providers|pools|members|routes|callers`: the config as tables,
//! every page of it, with members' health from a data-plane worker when
//! one answers.

use std::collections::HashMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;
use switchyard_proto::v1 as pb;

use super::client::{ConnArgs, Cp, get, one, pages, refused};
use super::output::{self, Output, StatusArg, Table, dash, on};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    #[value(alias = "provider")]
    Providers,
    #[value(alias = "pool")]
    Pools,
    #[value(alias = "member")]
    Members,
    #[value(alias = "route")]
    Routes,
    #[value(alias = "caller")]
    Callers,
}

impl Resource {
    fn plural(self) -> &'static str {
        match self {
            Self::Providers => "providers",
            Self::Pools => "pools",
            Self::Members => "members",
            Self::Routes => "routes",
            Self::Callers => "callers",
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  switchyard get pools\n  \
                        switchyard get members --pool demo -o wide\n  \
                        switchyard get members --status draining\n  \
                        switchyard get member demo/mock/mock-a        # a member by pool/provider/model (or its id)\n  \
                        switchyard get routes --pool demo             # routes with a tier on pool demo\n  \
                        switchyard get callers -o wide                # keys shown by their first characters only\n  \
                        switchyard get providers -o json | jq '.[].name'")]
pub struct GetArgs {
    /// What to list.
    #[arg(value_enum)]
    pub resource: Resource,
    /// One resource by name (members: id, or pool/provider/model).
    pub name: Option<String>,
    /// Only members of this pool, or routes with a tier on it.
    #[arg(long)]
    pub pool: Option<String>,
    /// Only members in this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Items asked for per page (the listing follows every page).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub chunk_size: u32,
}

pub async fn list_providers(cp: &Cp, page_size: u32) -> anyhow::Result<Vec<pb::Provider>> {
    pages(|page_token| {
        let mut cp = cp.clone();
        async move {
            let r = cp
                .list_providers(pb::ListProvidersRequest {
                    page_size,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((r.providers, r.next_page_token))
        }
    })
    .await
}

pub async fn list_pools(cp: &Cp, page_size: u32) -> anyhow::Result<Vec<pb::Pool>> {
    pages(|page_token| {
        let mut cp = cp.clone();
        async move {
            let r = cp
                .list_pools(pb::ListPoolsRequest {
                    page_size,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((r.pools, r.next_page_token))
        }
    })
    .await
}

/// Members, filtered as ListMembers filters (empty strings: all).
pub async fn list_members(
    cp: &Cp,
    page_size: u32,
    filter: pb::ListMembersRequest,
) -> anyhow::Result<Vec<pb::Member>> {
    pages(|page_token| {
        let mut cp = cp.clone();
        let req = pb::ListMembersRequest {
            page_size,
            page_token,
            ..filter.clone()
        };
        async move {
            let r = cp.list_members(req).await?.into_inner();
            Ok((r.members, r.next_page_token))
        }
    })
    .await
}

pub async fn list_routes(cp: &Cp, page_size: u32, pool: &str) -> anyhow::Result<Vec<pb::Route>> {
    pages(|page_token| {
        let mut cp = cp.clone();
        let pool = pool.to_owned();
        async move {
            let r = cp
                .list_routes(pb::ListRoutesRequest {
                    page_size,
                    page_token,
                    pool,
                })
                .await?
                .into_inner();
            Ok((r.routes, r.next_page_token))
        }
    })
    .await
}

/// A member by id, or by `pool/provider/upstream-model` (the model may hold `/`).
pub async fn find_member(cp: &Cp, key: &str) -> anyhow::Result<pb::Member> {
    let mut parts = key.splitn(3, '/');
    if let (Some(pool), Some(provider), Some(model)) = (parts.next(), parts.next(), parts.next()) {
        let filter = pb::ListMembersRequest {
            pool: pool.into(),
            provider: provider.into(),
            ..Default::default()
        };
        return list_members(cp, 1000, filter)
            .await?
            .into_iter()
            .find(|m| m.upstream_model == model)
            .ok_or_else(|| anyhow::anyhow!("NotFound: no member {key}"));
    }
    one(cp.clone().get_member(get(key)).await)
}

/// Members' health as a data-plane worker holds it, by member id.
pub async fn health(conn: &ConnArgs) -> anyhow::Result<HashMap<String, pb::MemberHealth>> {
    let ask = async {
        let mut dp = conn.inference().await?;
        let r = dp
            .list_models(pb::ListModelsRequest {})
            .await
            .map_err(refused)?
            .into_inner();
        Ok(r.models
            .into_iter()
            .flat_map(|m| m.members)
            .map(|h| (h.member_id.clone(), h))
            .collect())
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .map_err(|_| anyhow::anyhow!("the data plane did not answer within 5s"))?
}

pub async fn run(conn: &ConnArgs, args: GetArgs) -> anyhow::Result<()> {
    if args.pool.is_some() && !matches!(args.resource, Resource::Members | Resource::Routes) {
        anyhow::bail!("--pool filters members and routes");
    }
    if args.status.is_some() && args.resource != Resource::Members {
        anyhow::bail!("--status filters members");
    }
    let cp = conn.control_plane().await?;
    let (n, name) = (args.chunk_size, args.name.as_deref());
    let (table, wide) = (args.output.is_table(), args.output == Output::Wide);
    let (values, rendered): (Vec<Value>, Option<Table>) = match args.resource {
        Resource::Providers => {
            let ps = match name {
                Some(x) => vec![one(cp.clone().get_provider(get(x)).await)?],
                None => list_providers(&cp, n).await?,
            };
            let json = ps.iter().map(output::provider_json).collect();
            (json, providers_table(&ps, wide))
        }
        Resource::Pools => {
            let ps = match name {
                Some(x) => vec![one(cp.clone().get_pool(get(x)).await)?],
                None => list_pools(&cp, n).await?,
            };
            // Member counts, for the table only: of the one pool, or of all.
            let ms = match (table, &ps[..]) {
                (false, _) => Vec::new(),
                (true, [p]) if name.is_some() => {
                    let f = pb::ListMembersRequest {
                        pool: p.id.clone(),
                        ..Default::default()
                    };
                    list_members(&cp, n, f).await?
                }
                (true, _) => list_members(&cp, n, Default::default()).await?,
            };
            let json = ps.iter().map(output::pool_json).collect();
            (json, pools_table(&ps, &ms, wide))
        }
        Resource::Members => {
            let mut ms = match name {
                Some(x) => vec![find_member(&cp, x).await?],
                None => {
                    let f = pb::ListMembersRequest {
                        pool: args.pool.clone().unwrap_or_default(),
                        status: args.status.map_or(0, |s| pb::MemberStatus::from(s).into()),
                        ..Default::default()
                    };
                    list_members(&cp, n, f).await?
                }
            };
            ms.sort_by(|a, b| {
                let key = |m: &pb::Member| {
                    (
                        m.pool_name.clone(),
                        m.provider_name.clone(),
                        m.upstream_model.clone(),
                    )
                };
                key(a).cmp(&key(b))
            });
            // Health is extra: a data plane that is down leaves it as "-".
            let health = match table {
                true => health(conn).await.unwrap_or_default(),
                false => HashMap::new(),
            };
            let json = ms.iter().map(output::member_json).collect();
            (json, members_table(&ms, &health, wide))
        }
        Resource::Routes => {
            let rs = match name {
                Some(x) => vec![one(cp.clone().get_route(get(x)).await)?],
                None => list_routes(&cp, n, args.pool.as_deref().unwrap_or_default()).await?,
            };
            let json = rs.iter().map(output::route_json).collect();
            (json, routes_table(&rs, wide))
        }
        Resource::Callers => {
            let cs = match name {
                Some(x) => vec![one(cp.clone().get_caller(get(x)).await)?],
                None => super::callers_view::list(&cp, n).await?,
            };
            let json = cs.iter().map(super::callers_view::json).collect();
            (json, super::callers_view::table(&cs, wide))
        }
    };
    if !table {
        // One resource by name prints as itself; a listing as an array.
        let value = match name {
            Some(_) => values.into_iter().next().unwrap_or(Value::Null),
            None => Value::Array(values),
        };
        return output::print_value(args.output, &value);
    }
    match rendered {
        Some(t) => print!("{}", t.render()),
        None => eprintln!("no {} found", args.resource.plural()),
    }
    Ok(())
}

fn providers_table(ps: &[pb::Provider], wide: bool) -> Option<Table> {
    let mut cols = vec!["NAME", "KIND", "BASE_URL", "CREDENTIAL", "ENABLED"];
    if wide {
        cols.extend(["KEYS", "TIMEOUTS", "HEADERS", "ETAG"]);
    }
    let mut t = Table::new(&cols);
    for p in ps {
        let mut row = vec![
            p.name.clone(),
            output::kind(p.kind),
            dash(&p.base_url).into(),
            output::credential(p.credential_info.as_ref()),
            on(p.enabled).into(),
        ];
        if wide {
            let mut headers: Vec<&str> = p.extra_headers.keys().map(String::as_str).collect();
            headers.sort_unstable();
            let keys: Vec<&str> = p.keys.iter().map(|k| k.name.as_str()).collect();
            row.extend([
                dash(&keys.join(",")).into(),
                output::timeouts(p.timeouts.as_ref()),
                dash(&headers.join(",")).into(),
                p.etag.clone(),
            ]);
        }
        t.row(row);
    }
    (!ps.is_empty()).then_some(t)
}

fn pools_table(ps: &[pb::Pool], ms: &[pb::Member], wide: bool) -> Option<Table> {
    let mut cols = vec!["NAME", "STRATEGY", "MEMBERS", "ENABLED", "DESCRIPTION"];
    if wide {
        cols.extend(["FAILOVER", "EXTRA", "ETAG"]);
    }
    let mut t = Table::new(&cols);
    for p in ps {
        let members = ms.iter().filter(|m| m.pool == p.id).count();
        let mut row = vec![
            p.name.clone(),
            output::strategy(p.strategy),
            members.to_string(),
            on(p.enabled).into(),
            dash(&p.description).into(),
        ];
        if wide {
            row.extend([
                output::failover(p.failover.as_ref()),
                output::extra(p.allow_request_extra).into(),
                p.etag.clone(),
            ]);
        }
        t.row(row);
    }
    (!ps.is_empty()).then_some(t)
}

/// A member's live signals as a worker sees them, fleet-wide: requests in
/// flight (a draining member is done when it reaches 0), peak-EWMA time to
/// first token and total latency ("-": no worker answered, or no data yet).
pub fn live_cells(h: Option<&pb::MemberHealth>) -> [String; 3] {
    let ms = |v: f64| {
        if v <= 0.0 {
            "-".to_owned()
        } else if v >= 10.0 {
            format!("{v:.0}ms")
        } else {
            format!("{v:.1}ms")
        }
    };
    match h {
        Some(h) => [h.in_flight.to_string(), ms(h.ttft_ms), ms(h.latency_ms)],
        None => ["-".into(), "-".into(), "-".into()],
    }
}

/// A member's routing settings as cells: concurrency cap, context window,
/// pinned key (`-` when unset).
pub fn routing_cells(m: &pb::Member) -> [String; 3] {
    [
        output::limit(m.max_concurrency.map(u64::from)),
        output::limit(m.context_tokens),
        dash(&m.key).into(),
    ]
}

/// The routing columns show only when a member sets one of them.
pub fn any_routing(ms: &[pb::Member]) -> bool {
    ms.iter()
        .any(|m| m.max_concurrency.is_some() || m.context_tokens.is_some() || !m.key.is_empty())
}

/// A member's runtime targets as the data plane lists them: the member
/// itself, or one `member~key` per provider key it serves through (each with
/// its own health, in-flight and headroom), by key name; the member alone,
/// without health, when the data plane lists neither.
pub fn targets<'a>(
    health: &'a HashMap<String, pb::MemberHealth>,
    id: &str,
) -> Vec<(String, Option<&'a pb::MemberHealth>)> {
    if let Some(h) = health.get(id) {
        return vec![(id.to_owned(), Some(h))];
    }
    let prefix = format!("{id}~");
    let mut keyed: Vec<(String, Option<&pb::MemberHealth>)> = health
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, h)| (k.clone(), Some(h)))
        .collect();
    if keyed.is_empty() {
        return vec![(id.to_owned(), None)];
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed
}

pub const ROUTING_COLUMNS: [&str; 3] = ["MAX_CONC", "CONTEXT", "KEY"];

pub fn members_table(
    ms: &[pb::Member],
    health: &HashMap<String, pb::MemberHealth>,
    wide: bool,
) -> Option<Table> {
    let mut cols = vec![
        "ID",
        "POOL",
        "PROVIDER",
        "MODEL",
        "WEIGHT",
        "PRIORITY",
        "STATUS",
        "HEALTH",
        "IN_FLIGHT",
        "TTFT",
        "LATENCY",
    ];
    let routing = any_routing(ms);
    if routing {
        cols.extend(ROUTING_COLUMNS);
    }
    if wide {
        cols.extend(["RPM_LIMIT", "TPM_LIMIT", "MAX_OUTPUT", "ETAG"]);
    }
    let now = output::now_ms();
    let mut t = Table::new(&cols);
    for m in ms {
        for (id, h) in targets(health, &m.id) {
            let mut row = vec![
                id,
                m.pool_name.clone(),
                m.provider_name.clone(),
                m.upstream_model.clone(),
                m.weight.to_string(),
                m.priority.to_string(),
                output::status_upper(m.status),
                output::health(h, now),
            ];
            row.extend(live_cells(h));
            if routing {
                row.extend(routing_cells(m));
            }
            if wide {
                row.extend([
                    output::limit(m.rpm_limit),
                    output::limit(m.tpm_limit),
                    output::limit(m.max_output_tokens.map(u64::from)),
                    m.etag.clone(),
                ]);
            }
            t.row(row);
        }
    }
    (!ms.is_empty()).then_some(t)
}

fn routes_table(rs: &[pb::Route], wide: bool) -> Option<Table> {
    let mut cols = vec!["NAME", "TIERS", "ENABLED"];
    if wide {
        cols.extend(["DESCRIPTION", "ETAG"]);
    }
    let mut t = Table::new(&cols);
    for r in rs {
        let mut row = vec![
            r.name.clone(),
            output::tiers(&r.tiers),
            on(r.enabled).into(),
        ];
        if wide {
            row.extend([dash(&r.description).into(), r.etag.clone()]);
        }
        t.row(row);
    }
    (!rs.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(id: &str, in_flight: u32) -> (String, pb::MemberHealth) {
        let h = pb::MemberHealth {
            member_id: id.into(),
            in_flight,
            ..Default::default()
        };
        (id.into(), h)
    }

    #[test]
    fn a_member_with_keys_shows_one_row_per_key_target() {
        let health: HashMap<_, _> = [h("m1", 2), h("m2~a", 1), h("m2~b", 3), h("m20", 4)]
            .into_iter()
            .collect();
        let one = targets(&health, "m1");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].1.map(|h| h.in_flight), Some(2));
        let keyed: Vec<(String, Option<u32>)> = targets(&health, "m2")
            .into_iter()
            .map(|(id, h)| (id, h.map(|h| h.in_flight)))
            .collect();
        assert_eq!(
            keyed,
            vec![("m2~a".into(), Some(1)), ("m2~b".into(), Some(3))],
            "m20 is another member"
        );
        let unknown = targets(&health, "m3");
        assert_eq!(unknown.len(), 1);
        assert!(unknown[0].1.is_none());
    }
}
