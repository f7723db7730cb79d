//! Input rules for every resource field. Each failure is INVALID_ARGUMENT
//! naming the field and saying what a valid value looks like.

use switchyard_shared::credential_ref::ReferenceRules;

use crate::error::{ApiError, ApiResult};

pub const NAME_MAX: usize = 63;
pub const UPSTREAM_MODEL_MAX: usize = 256;
pub const DESCRIPTION_MAX: usize = 1024;
pub const MAX_HEADERS: usize = 32;
pub const MAX_TIERS: usize = 16;
pub const LIMIT_MAX: u64 = 1_000_000_000;
/// An id or a name given to look something up.
pub const LOOKUP_MAX: usize = 256;
/// `base_url` (the column holds 2048).
pub const URL_MAX: usize = 2048;

/// Text fields refuse control characters (NUL above all: Postgres cannot
/// store it) and anything longer than `max` bytes.
pub fn plain(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max {
        return Err(ApiError::invalid(format!(
            "{field} is {} bytes; the limit is {max}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters (such as NUL or newlines)"
        )));
    }
    Ok(())
}

/// An id or a name to look up.
pub fn lookup(field: &str, value: &str) -> ApiResult<()> {
    plain(field, value, LOOKUP_MAX)
}

/// Names of providers, pools and routes: 1-63 of `[A-Za-z0-9._-]`, starting
/// with a letter or digit (so `provider/model` stays unambiguous).
pub fn name(field: &str, value: &str) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= NAME_MAX
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        return Ok(());
    }
    let shown = clip(value);
    Err(ApiError::invalid(format!(
        "{field} '{shown}' is invalid: use 1-{NAME_MAX} characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
    )))
}

/// Upstream model ids ("gpt-4o-mini", "meta-llama/Llama-3-8B"): 1-256
/// printable characters without whitespace.
pub fn upstream_model(field: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() || value.len() > UPSTREAM_MODEL_MAX {
        return Err(ApiError::invalid(format!(
            "{field} must be 1-{UPSTREAM_MODEL_MAX} characters, got {}",
            value.len()
        )));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain whitespace or control characters"
        )));
    }
    Ok(())
}

pub fn description(field: &str, value: &str) -> ApiResult<()> {
    if value.len() > DESCRIPTION_MAX {
        return Err(ApiError::invalid(format!(
            "{field} is {} bytes; the limit is {DESCRIPTION_MAX}",
            value.len()
        )));
    }
    // Line breaks and tabs are text; other control characters are not.
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters other than line breaks and tabs (such as NUL)"
        )));
    }
    Ok(())
}

/// `http(s)://host[:port][/path]`, no user info (credentials go in the credential field).
pub fn base_url(field: &str, value: &str) -> ApiResult<()> {
    plain(field, value, URL_MAX)?;
    let parsed = url::Url::parse(value).map_err(|e| {
        ApiError::invalid(format!(
            "{field} '{}' is not a URL ({e}); use e.g. https://api.openai.com/v1",
            clip(value)
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::invalid(format!(
            "{field} must use http or https, not '{}'",
            clip(parsed.scheme())
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::invalid(format!(
            "{field} '{}' has no host",
            clip(value)
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Never echo the URL here: it carries a secret.
        return Err(ApiError::invalid(format!(
            "{field} must not embed credentials; put them in the provider's credential field"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ApiError::invalid(format!(
            "{field} must not have a query or fragment"
        )));
    }
    Ok(())
}

/// Extra headers are returned on reads, so they must not carry credentials.
pub fn extra_headers(
    field: &str,
    headers: &std::collections::HashMap<String, String>,
) -> ApiResult<()> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::invalid(format!(
            "{field} has {} entries; the limit is {MAX_HEADERS}",
            headers.len()
        )));
    }
    for (k, v) in headers {
        plain(&format!("{field} key"), k, 256)?;
        if v.len() > 4096 {
            return Err(ApiError::invalid(format!(
                "{field} value for '{}' is {} bytes; the limit is 4096",
                clip(k),
                v.len()
            )));
        }
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            ApiError::invalid(format!(
                "{field} key '{}' is not a valid HTTP header name",
                clip(k)
            ))
        })?;
        if matches!(
            name.as_str(),
            "authorization" | "x-api-key" | "api-key" | "proxy-authorization" | "cookie"
        ) {
            return Err(ApiError::invalid(format!(
                "{field} must not set '{}': header values are returned on reads; use the credential field",
                clip(name.as_str())
            )));
        }
        if http::HeaderValue::from_str(v).is_err() {
            return Err(ApiError::invalid(format!(
                "{field} value for '{}' is not a valid HTTP header value",
                clip(name.as_str())
            )));
        }
    }
    Ok(())
}

/// Credential references: `env:NAME` under the allowed prefix, or
/// `file:/path` inside the credential folder (`shared::credential_ref`).
pub fn credential_reference(field: &str, value: &str, rules: &ReferenceRules) -> ApiResult<()> {
    // The refusal never echoes the value: a key pasted here by mistake must not come back.
    rules
        .check(value)
        .map(|_| ())
        .map_err(|e| ApiError::invalid(format!("{field} is refused: {e}")))
}

pub fn inline_secret(field: &str, value: &str) -> ApiResult<()> {
    if value.trim().is_empty() || value.len() > 8192 {
        return Err(ApiError::invalid(format!(
            "{field} must be 1-8192 bytes and not blank"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// An integer within `lo..=hi`.
pub fn range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    lo: T,
    hi: T,
) -> ApiResult<T> {
    if value < lo || value > hi {
        return Err(ApiError::invalid(format!(
            "{field} is {value}; it must be between {lo} and {hi}"
        )));
    }
    Ok(value)
}

/// Caller input as shown back in messages: control characters escaped, at
/// most 64 characters (then '…'), and never a value shaped like a credential.
pub fn clip(value: &str) -> String {
    if looks_secret(value) {
        return "(not shown: it looks like a credential)".to_owned();
    }
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == 64 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether any word of `value` (split at spaces, ':' and '=') looks like an
/// API key or token: a known prefix and key-like length, or a long run of
/// mixed-case letters and digits (model ids like `meta-llama/Llama-3-70B`
/// have '-' or '/', keys of that shape do not).
fn looks_secret(value: &str) -> bool {
    const PREFIXES: [&str; 8] = ["sk-", "sk_", "xox", "ghp_", "AKIA", "AIza", "eyJ", "Bearer"];
    value
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | '=' | ','))
        .any(|w| {
            (PREFIXES.iter().any(|p| w.starts_with(p)) && w.len() >= 20)
                || (w.len() >= 32
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+'))
                    && w.chars().any(|c| c.is_ascii_digit())
                    && w.chars().any(|c| c.is_ascii_uppercase())
                    && w.chars().any(|c| c.is_ascii_lowercase()))
        })
}

/// The name a provider's own credential goes by among its keys.
pub const DEFAULT_KEY: &str = "default";
/// Named keys a provider may hold besides its own credential.
pub const MAX_KEYS: usize = 64;
/// A member's `max_concurrency` when set: `1..=MAX_CONCURRENCY_MAX`.
pub const MAX_CONCURRENCY_MAX: u32 = 100_000;
/// A member's `context_tokens` when set: `1..=CONTEXT_TOKENS_MAX`.
pub const CONTEXT_TOKENS_MAX: u64 = 10_000_000;

/// A provider's key names (`provider.keys`): each a valid name, none
/// "default" (the provider's own credential), none twice, at most MAX_KEYS.
pub fn key_names<'a>(field: &str, names: impl Iterator<Item = &'a str>) -> ApiResult<()> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, n) in names.enumerate() {
        if i >= MAX_KEYS {
            return Err(ApiError::invalid(format!(
                "{field} has more than {MAX_KEYS} keys; remove some"
            )));
        }
        name(&format!("{field}[{i}].name"), n)?;
        if n == DEFAULT_KEY {
            return Err(ApiError::invalid(format!(
                "{field}[{i}].name '{DEFAULT_KEY}' is taken by the provider's own credential; \
                 set provider.credential instead, or pick another name"
            )));
        }
        if seen.contains(&n) {
            return Err(ApiError::invalid(format!(
                "{field}[{i}].name '{n}' is given twice; key names must be unique per provider"
            )));
        }
        seen.push(n);
    }
    Ok(())
}

/// A member's pinned key: empty (every key), "default", or a name.
pub fn member_key(field: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Ok(());
    }
    name(field, value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn input_shown_back_is_escaped_cut_and_never_a_secret() {
        assert_eq!(super::clip("a\u{0}b\n"), "a\\u{0}b\\n");
        let long = "x".repeat(100);
        assert_eq!(super::clip(&long).chars().count(), 65);
        assert!(super::clip(&long).ends_with('…'));
        for secret in [
            "sk-proj-0123456789abcdefghij",
            "Authorization: Bearer sk-proj-0123456789abcdefghij",
            "api.openai.com/v1 sk-proj-0123456789abcdefghij",
            "AbCdEf0123456789AbCdEf0123456789xyz",
        ] {
            assert!(!super::clip(secret).contains("0123456789"), "{secret}");
        }
        for ordinary in [
            "coding",
            "sk-learn-models",
            "meta-llama/Meta-Llama-3-70B-Instruct",
            "gpt-4o-mini-2024-07-18",
        ] {
            assert_eq!(super::clip(ordinary), ordinary);
        }
        let err = super::credential_reference("c", "sk-live-0123456789abcdef", &Default::default())
            .expect_err("bad");
        assert!(!err.to_string().contains("0123456789"), "{err}");
        assert!(super::plain("f", "a\u{0}", 10).is_err());
        assert!(super::description("d", "line one\nline two\ttab").is_ok());
        assert!(super::description("d", "a\u{0}b").is_err());
        assert!(super::base_url("u", &format!("https://x/{}", "a".repeat(2100))).is_err());
    }

    use super::*;

    #[test]
    fn names() {
        for ok in ["coding", "chat-fast", "gpt4o.mini_2", "A"] {
            assert!(name("n", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a b", "a/b", "ünï", &"x".repeat(64)] {
            let err = name("pool.name", bad).expect_err(bad);
            assert!(err.to_string().starts_with("pool.name"), "{err}");
        }
    }

    #[test]
    fn urls() {
        assert!(base_url("u", "https://api.openai.com/v1").is_ok());
        assert!(base_url("u", "http://127.0.0.1:8080").is_ok());
        for bad in [
            "api.openai.com",
            "ftp://x",
            "https://",
            "http://u:secretpw@h/",
            "https://h/?k=1",
        ] {
            assert!(base_url("u", bad).is_err(), "{bad}");
        }
        let err = base_url("u", "http://u:secretpw@h/").expect_err("userinfo");
        assert!(!err.to_string().contains("secretpw"), "{err}");
    }

    #[test]
    fn references() {
        let rules =
            ReferenceRules::new("SWITCHYARD_CRED_", Some("/run/secrets".into())).expect("rules");
        assert!(credential_reference("c", "env:SWITCHYARD_CRED_OPENAI", &rules).is_ok());
        assert!(credential_reference("c", "file:/run/secrets/key", &rules).is_ok());
        for bad in [
            "env:",
            "env:1X",
            "file:relative",
            "vault:x",
            "sk-123",
            "env:OPENAI_API_KEY",
            "env:SWITCHYARD_MASTER_KEY",
            "file:/etc/passwd",
        ] {
            let err =
                credential_reference("provider.credential.reference", bad, &rules).expect_err(bad);
            assert!(
                err.to_string()
                    .starts_with("provider.credential.reference is refused: "),
                "{err}"
            );
        }
    }

    #[test]
    fn headers_cannot_carry_credentials() {
        let mut h = std::collections::HashMap::new();
        h.insert("X-Org".to_owned(), "acme".to_owned());
        assert!(extra_headers("h", &h).is_ok());
        h.insert("Authorization".to_owned(), "Bearer x".to_owned());
        assert!(extra_headers("h", &h).is_err());
    }

    #[test]
    fn key_names_are_valid_unique_and_not_default() {
        let check = |names: &[&str]| key_names("provider.keys", names.iter().copied());
        assert!(check(&[]).is_ok());
        assert!(check(&["batch", "spare-2"]).is_ok());
        let err = check(&["a", "a"]).expect_err("twice").to_string();
        assert!(
            err.contains("provider.keys[1].name 'a' is given twice"),
            "{err}"
        );
        let err = check(&["default"]).expect_err("taken").to_string();
        assert!(err.contains("'default' is taken"), "{err}");
        let err = check(&["bad name"]).expect_err("charset").to_string();
        assert!(err.contains("provider.keys[0].name"), "{err}");
        let many: Vec<String> = (0..=MAX_KEYS).map(|i| format!("k{i}")).collect();
        let err = key_names("provider.keys", many.iter().map(String::as_str))
            .expect_err("too many")
            .to_string();
        assert!(err.contains("more than 64 keys"), "{err}");
        assert!(member_key("member.key", "").is_ok());
        assert!(member_key("member.key", "default").is_ok());
        assert!(member_key("member.key", "a b").is_err());
    }
}
