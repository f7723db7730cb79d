//! Callers: who may call the data plane. `create caller` and `rotate caller`
//! print the key once (alone on the last line of stdout; `-q` prints
//! nothing else); every other command shows only its first characters.
//! `create`, `set` and `rotate` reach here; how callers read is in
//! `callers_view`.

use clap::{Args, Subcommand};
use switchyard_proto::v1 as pb;

use super::callers_view::{models, never, none_or, yes};
use super::client::{ConnArgs, Cp, get, one, refused};
use super::output::{self, on};

const CREATE_EXAMPLES: &str = "\
Examples:
  switchyard create caller billing --model chat --model coding --rpm 600 --daily-tokens 2000000
  switchyard create caller batch --model '*' --allow-direct --expires 90d --label team=data
  KEY=$(switchyard create caller ci --model demo --expires 2026-01-31T00:00:00Z -q)";

const ROTATE_EXAMPLES: &str = "\
Examples:
  switchyard rotate caller billing --grace 1h    # the old key keeps working for an hour
  switchyard rotate caller billing               # the old key is refused at once (a leaked key)
  KEY=$(switchyard rotate caller billing --grace 24h -q)";

const SET_EXAMPLES: &str = "\
Examples:
  switchyard set caller billing --enabled false
  switchyard set caller billing --model chat,coding --rpm 1200 --tpm none
  switchyard set caller batch --expires never --monthly-tokens 50000000";

/// `switchyard create caller`.
#[derive(Args, Debug)]
#[command(after_help = CREATE_EXAMPLES)]
pub struct CreateCallerArgs {
    /// Unique name; shown in logs, metrics and traces.
    pub name: String,
    /// A pool or route it may call (repeat it, or comma-separate); '*' for every one.
    #[arg(long = "model", required = true, value_delimiter = ',')]
    pub models: Vec<String>,
    /// May also address provider/model directly.
    #[arg(long)]
    pub allow_direct: bool,
    /// Requests per minute, fleet-wide (default: no limit).
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Tokens per minute, fleet-wide (default: no limit).
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Tokens per UTC day (default: no budget).
    #[arg(long)]
    pub daily_tokens: Option<u64>,
    /// Tokens per UTC calendar month (default: no budget).
    #[arg(long)]
    pub monthly_tokens: Option<u64>,
    /// When the key stops working: an RFC 3339 time, or a duration from now (90d, 12h).
    #[arg(long, value_parser = expiry)]
    pub expires: Option<prost_types::Timestamp>,
    /// KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// mTLS: a client certificate with this subject CN (or first SAN) authenticates as the caller.
    #[arg(long, default_value = "")]
    pub certificate_subject: String,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Print the key and nothing else.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `switchyard rotate`.
#[derive(Subcommand, Debug)]
#[command(after_help = ROTATE_EXAMPLES)]
pub enum RotateCmd {
    /// Give a caller a new key; the current one keeps working for --grace.
    #[command(after_help = ROTATE_EXAMPLES)]
    Caller {
        /// Name or id.
        name: String,
        /// How long the current key keeps working (30m, 1h, 7d; at most 30d). 0: refused at once.
        #[arg(long, default_value = "0s", value_parser = grace)]
        grace: u32,
        /// Print the key and nothing else.
        #[arg(short, long)]
        quiet: bool,
    },
}

/// `switchyard set caller`: only the flags given change.
#[derive(Args, Debug)]
#[command(after_help = SET_EXAMPLES)]
pub struct SetCallerArgs {
    /// Name or id.
    pub name: String,
    /// A disabled caller is refused like an unknown key.
    #[arg(long, value_parser = clap::value_parser!(bool))]
    pub enabled: Option<bool>,
    /// Replaces the list of pools and routes it may call ('*' for every one, '' for none).
    #[arg(long = "model", value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// May also address provider/model directly.
    #[arg(long, value_parser = clap::value_parser!(bool))]
    pub allow_direct: Option<bool>,
    /// Requests per minute, or none.
    #[arg(long, value_parser = limit)]
    pub rpm: Option<Limit>,
    /// Tokens per minute, or none.
    #[arg(long, value_parser = limit)]
    pub tpm: Option<Limit>,
    /// Tokens per UTC day, or none.
    #[arg(long, value_parser = limit)]
    pub daily_tokens: Option<Limit>,
    /// Tokens per UTC calendar month, or none.
    #[arg(long, value_parser = limit)]
    pub monthly_tokens: Option<Limit>,
    /// An RFC 3339 time, a duration from now (90d), or never.
    #[arg(long, value_parser = expiry_or_never)]
    pub expires: Option<Expiry>,
    #[arg(long)]
    pub certificate_subject: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
}

/// `N` or `none` (no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub(super) Option<u64>);

/// A time, or `never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry(Option<prost_types::Timestamp>);

pub(super) fn limit(s: &str) -> Result<Limit, String> {
    match s {
        "none" | "unlimited" => Ok(Limit(None)),
        _ => s
            .parse()
            .map(|n| Limit(Some(n)))
            .map_err(|_| format!("'{s}': give a whole number, or none")),
    }
}

/// An RFC 3339 time, or now plus a duration (whole seconds).
fn expiry(s: &str) -> Result<prost_types::Timestamp, String> {
    if let Ok(t) = s.parse::<prost_types::Timestamp>() {
        return Ok(t);
    }
    let bad = || {
        format!(
            "'{s}': give an RFC 3339 time (2026-01-31T00:00:00Z) or a duration from now (90d, 12h)"
        )
    };
    let d = humantime::parse_duration(s).map_err(|_| bad())?;
    let now = output::now_ms() / 1000;
    let seconds = i64::try_from(d.as_secs())
        .ok()
        .and_then(|d| now.checked_add(d))
        // Past 9999-12-31 is no RFC 3339 time.
        .filter(|&t| t <= 253_402_300_799)
        .ok_or_else(bad)?;
    Ok(prost_types::Timestamp { seconds, nanos: 0 })
}

fn expiry_or_never(s: &str) -> Result<Expiry, String> {
    match s {
        "never" | "none" => Ok(Expiry(None)),
        _ => expiry(s).map(|t| Expiry(Some(t))),
    }
}

fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("'{s}': give KEY=VALUE")),
    }
}

fn grace(s: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("'{s}': {e} (e.g. 30m, 1h, 7d)"))?;
    if d.subsec_nanos() != 0 {
        return Err(format!("'{s}': give whole seconds"));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("'{s}' is too long"))
}

/// A summary line, then the key alone on the last line of stdout, then a
/// note on stderr (`quiet`: the key only).
fn print_key(r: pb::CallerWithKey, summary: impl FnOnce(&pb::Caller) -> String, quiet: bool) {
    let c = r.caller.unwrap_or_default();
    if !quiet {
        println!("{}", summary(&c));
    }
    println!("{}", r.key);
    if !quiet {
        eprintln!(
            "note: the key is shown this once and cannot be read back; keep it in the calling \
             service's secret store (a lost key is replaced with `switchyard rotate caller {}`)",
            c.name
        );
    }
}

pub async fn create(cp: &mut Cp, a: CreateCallerArgs) -> anyhow::Result<()> {
    let caller = pb::Caller {
        name: a.name,
        description: a.description,
        models: a.models,
        allow_direct: a.allow_direct,
        rpm_limit: a.rpm,
        tpm_limit: a.tpm,
        daily_token_budget: a.daily_tokens,
        monthly_token_budget: a.monthly_tokens,
        expire_time: a.expires,
        labels: a.labels.into_iter().collect(),
        certificate_subject: a.certificate_subject,
        ..Default::default()
    };
    let r = one(cp
        .create_caller(pb::CreateCallerRequest {
            caller: Some(caller),
        })
        .await)?;
    let summary = |c: &pb::Caller| {
        format!(
            "caller {} created (models {}, direct {}, expires {}); its key:",
            c.name,
            models(&c.models),
            yes(c.allow_direct),
            never(c.expire_time.as_ref())
        )
    };
    print_key(r, summary, a.quiet);
    Ok(())
}

pub async fn rotate(conn: &ConnArgs, cmd: RotateCmd) -> anyhow::Result<()> {
    let RotateCmd::Caller { name, grace, quiet } = cmd;
    let mut cp = conn.control_plane().await?;
    let r = one(cp
        .rotate_caller_key(pb::RotateCallerKeyRequest {
            id_or_name: name,
            grace_seconds: grace,
            etag: String::new(),
        })
        .await)?;
    let summary = |c: &pb::Caller| {
        let previous = match &c.previous_key_expire_time {
            Some(t) if grace > 0 => format!("works until {t}"),
            _ => "is refused from now on".into(),
        };
        format!(
            "caller {} has a new key (the previous one {previous}):",
            c.name
        )
    };
    print_key(r, summary, quiet);
    Ok(())
}

pub async fn set(cp: &mut Cp, a: SetCallerArgs) -> anyhow::Result<()> {
    let cur = one(cp.get_caller(get(&a.name)).await)?;
    let mut c = pb::Caller {
        id: cur.id.clone(),
        name: cur.name.clone(),
        // Nobody else's change in between: the "from" values below are what changed.
        etag: cur.etag.clone(),
        ..Default::default()
    };
    let (mut paths, mut changes) = (Vec::new(), Vec::new());
    let mut change = |path: &str, from: String, to: String| {
        paths.push(path.to_owned());
        changes.push(format!("{path} {from} -> {to}"));
    };
    if let Some(e) = a.enabled {
        c.enabled = Some(e);
        change("enabled", on(cur.enabled).into(), on(c.enabled).into());
    }
    if let Some(ms) = a.models {
        c.models = ms.into_iter().filter(|m| !m.is_empty()).collect();
        change("models", models(&cur.models), models(&c.models));
    }
    if let Some(d) = a.allow_direct {
        c.allow_direct = d;
        change("allow_direct", yes(cur.allow_direct).into(), yes(d).into());
    }
    let limits = [
        ("rpm_limit", a.rpm, cur.rpm_limit, &mut c.rpm_limit),
        ("tpm_limit", a.tpm, cur.tpm_limit, &mut c.tpm_limit),
        (
            "daily_token_budget",
            a.daily_tokens,
            cur.daily_token_budget,
            &mut c.daily_token_budget,
        ),
        (
            "monthly_token_budget",
            a.monthly_tokens,
            cur.monthly_token_budget,
            &mut c.monthly_token_budget,
        ),
    ];
    for (path, given, from, slot) in limits {
        if let Some(Limit(to)) = given {
            *slot = to;
            change(path, none_or(from), none_or(to));
        }
    }
    if let Some(Expiry(t)) = a.expires {
        c.expire_time = t;
        change(
            "expire_time",
            never(cur.expire_time.as_ref()),
            never(t.as_ref()),
        );
    }
    if let Some(s) = a.certificate_subject {
        change(
            "certificate_subject",
            format!("{:?}", cur.certificate_subject),
            format!("{s:?}"),
        );
        c.certificate_subject = s;
    }
    if let Some(d) = a.description {
        change(
            "description",
            format!("{:?}", cur.description),
            format!("{d:?}"),
        );
        c.description = d;
    }
    if paths.is_empty() {
        anyhow::bail!(
            "nothing to set: give --enabled, --model, --allow-direct, --rpm, --tpm, \
             --daily-tokens, --monthly-tokens, --expires, --certificate-subject or --description"
        );
    }
    cp.update_caller(pb::UpdateCallerRequest {
        caller: Some(c),
        update_mask: Some(prost_types::FieldMask { paths }),
    })
    .await
    .map_err(refused)?;
    println!("caller {} updated: {}", cur.name, changes.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_limits_times_durations_and_labels() {
        assert_eq!(limit("600"), Ok(Limit(Some(600))));
        assert_eq!(limit("none"), Ok(Limit(None)));
        assert!(limit("-1").is_err() && limit("lots").is_err());
        let t = expiry("2026-01-31T00:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-01-31T00:00:00Z");
        assert_eq!(
            expiry("2026-01-31T02:00:00+02:00").unwrap(),
            t,
            "offsets are RFC 3339 too"
        );
        let in_90d = expiry("90d").unwrap().seconds - output::now_ms() / 1000;
        assert!((90 * 86400 - 5..=90 * 86400).contains(&in_90d), "{in_90d}");
        assert!(expiry("soon").is_err() && expiry("99999999999y").is_err());
        assert_eq!(expiry_or_never("never"), Ok(Expiry(None)));
        assert_eq!(grace("1h"), Ok(3600));
        assert_eq!(grace("0s"), Ok(0));
        assert!(grace("500ms").is_err() && grace("1x").is_err());
        assert_eq!(label("team=a=b"), Ok(("team".into(), "a=b".into())));
        assert!(label("=x").is_err() && label("team").is_err());
    }
}
