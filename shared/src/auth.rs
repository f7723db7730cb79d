//! Bearer-token access to the control plane: a reader token may call the
//! RPCs listed in [`CONTROL_PLANE_READS`], an admin token everything; an
//! RPC nobody listed (a new one included) is a write. (The data plane only
//! asks [`Authorizer::knows`]: every configured token may call inference.)
//!
//! A tower filter in front of every service, so no handler can forget it.
//! The services in [`OPEN_SERVICES`] — grpc.health.v1 and reflection — need
//! no token (probes and `grpcurl list` need them; they expose no
//! configuration); every other path needs one, an unknown one too.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq as _;
use tonic::Status;
use tower::BoxError;

/// The control plane's service, as gRPC paths name it.
pub const CONTROL_PLANE: &str = "switchyard.v1.ControlPlane";

/// The services anyone may call without a token.
pub const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// What a reader token may call on [`CONTROL_PLANE`]. Every RPC not listed
/// here needs an admin token, so a new RPC is a write until it is added.
pub const CONTROL_PLANE_READS: &[(&str, ReaderMay)] = &[
    ("GetProvider", ReaderMay::Call),
    ("ListProviders", ReaderMay::Call),
    ("GetPool", ReaderMay::Call),
    ("ListPools", ReaderMay::Call),
    ("GetMember", ReaderMay::Call),
    ("ListMembers", ReaderMay::Call),
    ("GetRoute", ReaderMay::Call),
    ("ListRoutes", ReaderMay::Call),
    ("GetCaller", ReaderMay::Call),
    ("ListCallers", ReaderMay::Call),
    ("GetSnapshot", ReaderMay::Call),
    ("WatchChanges", ReaderMay::Call),
    ("ExportConfig", ReaderMay::Call),
    // A dry run only reads: a CI job may show the plan on a pull request.
    ("ApplyConfig", ReaderMay::DryRunOnly),
];

/// How far a reader token may go with a listed RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderMay {
    Call,
    /// Only with `dry_run` set. The filter lets the call through (it does
    /// not read bodies); the handler refuses a reader's real run, through
    /// [`reader_may_apply`].
    DryRunOnly,
}

/// Whether `caller` may run ApplyConfig with this `dry_run`: an admin (or
/// auth off) always, a reader only for a dry run.
pub fn reader_may_apply(caller: Option<&Caller>, dry_run: bool) -> Result<(), Status> {
    if dry_run || caller.is_none_or(|c| c.role != Some(Role::Reader)) {
        return Ok(());
    }
    Err(Status::permission_denied(
        "ApplyConfig needs an admin token unless dry_run is set; this token may only read",
    ))
}

/// Whether `path` (`/package.Service/Method`) belongs to an open service.
pub fn is_open(path: &str) -> bool {
    service_and_method(path).is_some_and(|(service, _)| OPEN_SERVICES.contains(&service))
}

fn service_and_method(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/')?.split_once('/')
}

/// What a reader may do with `path`; None: nothing (it needs an admin).
fn reader_may(path: &str) -> Option<ReaderMay> {
    let (service, method) = service_and_method(path)?;
    if service != CONTROL_PLANE {
        return None;
    }
    CONTROL_PLANE_READS
        .iter()
        .find(|(read, _)| *read == method)
        .map(|(_, may)| *may)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Reader,
    Admin,
}

/// Who made a call: the token's role and name (`dev` when auth is off).
/// Put in the request's extensions for the handlers (the audit trail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub role: Option<Role>,
    pub name: String,
}

/// The configured tokens and their names. Debug never shows the tokens.
#[derive(Clone)]
pub struct Authorizer {
    tokens: Arc<Vec<(SecretString, Role, String)>>,
    disabled: bool,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("tokens", &self.tokens.len())
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl Authorizer {
    /// Tokens named by their role (`admin`, `reader`).
    pub fn new(tokens: Vec<(SecretString, Role)>) -> Self {
        Self::named(
            tokens
                .into_iter()
                .map(|(t, r)| {
                    let name = match r {
                        Role::Admin => "admin",
                        Role::Reader => "reader",
                    };
                    (t, r, name.to_owned())
                })
                .collect(),
        )
    }

    /// Tokens with the names changes are recorded under.
    pub fn named(tokens: Vec<(SecretString, Role, String)>) -> Self {
        Self {
            tokens: Arc::new(tokens),
            disabled: false,
        }
    }

    /// Every caller may do everything (the embedded default).
    pub fn disabled() -> Self {
        Self {
            tokens: Arc::new(Vec::new()),
            disabled: true,
        }
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Whether `presented` is one of the tokens (constant time), whatever
    /// the path: for callers that decide paths themselves.
    pub fn knows(&self, presented: &str) -> bool {
        !self.disabled && self.role_of(presented).is_some()
    }

    /// The role and name of a bearer token; compares every token in constant time.
    fn role_of(&self, presented: &str) -> Option<(Role, &str)> {
        let mut found: Option<(Role, &str)> = None;
        for (token, role, name) in self.tokens.iter() {
            if bool::from(token.expose_secret().as_bytes().ct_eq(presented.as_bytes())) {
                found = match (found, role) {
                    (Some(f @ (Role::Admin, _)), _) => Some(f),
                    (_, Role::Admin) => Some((Role::Admin, name.as_str())),
                    (Some(f), _) => Some(f),
                    (None, _) => Some((Role::Reader, name.as_str())),
                };
            }
        }
        found
    }

    /// Decides one call by its path and headers: who it is (None for the
    /// open services: health, reflection).
    pub fn authorize(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Caller>, Status> {
        if is_open(path) {
            return Ok(None);
        }
        if self.disabled {
            return Ok(Some(Caller {
                role: None,
                name: "dev".to_owned(),
            }));
        }
        let header = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(header) = header else {
            return Err(Status::unauthenticated(
                "missing 'authorization: Bearer <token>' metadata",
            ));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be 'Bearer <token>'")
            })?;
        let (role, name) = self
            .role_of(token.trim())
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))?;
        if role != Role::Admin && reader_may(path).is_none() {
            let method = service_and_method(path).map_or(path, |(_, m)| m);
            return Err(Status::permission_denied(format!(
                "{method} needs an admin token; this token may only read"
            )));
        }
        Ok(Some(Caller {
            role: Some(role),
            name: name.to_owned(),
        }))
    }
}

impl<B> tower::filter::Predicate<http::Request<B>> for Authorizer {
    type Request = http::Request<B>;

    fn check(&mut self, mut req: http::Request<B>) -> Result<Self::Request, BoxError> {
        match self.authorize(req.uri().path(), req.headers()) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    req.extensions_mut().insert(caller);
                }
                Ok(req)
            }
            Err(status) => {
                tracing::info!(path = %req.uri().path(), code = ?status.code(), "call refused");
                Err(Box::new(status))
            }
        }
    }
}

/// Parses a tokens file: one `admin TOKEN [NAME]` or `reader TOKEN [NAME]`
/// per line; `#` comments. NAME (letters, digits, `.`, `_`, `-`; default the
/// role) is who changes made with the token are recorded as.
pub fn parse_tokens_file(text: &str) -> Result<Vec<(SecretString, Role, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (role, token) = line.split_once(char::is_whitespace).ok_or_else(|| {
            format!(
                "tokens file line {}: expected 'admin TOKEN' or 'reader TOKEN'",
                i + 1
            )
        })?;
        let role = match role {
            "admin" => Role::Admin,
            "reader" => Role::Reader,
            other => {
                return Err(format!(
                    "tokens file line {}: unknown role '{other}'; use admin or reader",
                    i + 1
                ));
            }
        };
        let mut parts = token.split_whitespace();
        let token = parts.next().unwrap_or_default();
        let name = match parts.next() {
            None => match role {
                Role::Admin => "admin".to_owned(),
                Role::Reader => "reader".to_owned(),
            },
            Some(n)
                if n.len() <= 64
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
            {
                n.to_owned()
            }
            Some(_) => {
                return Err(format!(
                    "tokens file line {}: a token's name is 1-64 letters, digits, '.', '_' or '-'",
                    i + 1
                ));
            }
        };
        if parts.next().is_some() {
            return Err(format!(
                "tokens file line {}: expected 'admin TOKEN [NAME]' or 'reader TOKEN [NAME]'",
                i + 1
            ));
        }
        out.push((SecretString::from(token.to_owned()), role, name));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().expect("header"));
        h
    }

    #[test]
    fn roles_and_writes() {
        let a = Authorizer::new(vec![
            (SecretString::from("adm-token"), Role::Admin),
            (SecretString::from("read-token"), Role::Reader),
        ]);
        let create = "/switchyard.v1.ControlPlane/CreatePool";
        let list = "/switchyard.v1.ControlPlane/ListPools";
        let role = |r: Result<Option<Caller>, Status>| r.ok().flatten().and_then(|c| c.role);
        assert_eq!(
            role(a.authorize(create, &headers("Bearer adm-token"))),
            Some(Role::Admin)
        );
        assert_eq!(
            role(a.authorize(list, &headers("Bearer read-token"))),
            Some(Role::Reader)
        );
        let denied = a
            .authorize(create, &headers("Bearer read-token"))
            .expect_err("reader writes");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let unknown = a
            .authorize(list, &headers("Bearer nope"))
            .expect_err("unknown");
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        let missing = a
            .authorize(list, &http::HeaderMap::new())
            .expect_err("missing");
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(
            a.authorize("/grpc.health.v1.Health/Check", &http::HeaderMap::new())
                .is_ok()
        );
        assert!(!format!("{a:?}").contains("adm-token"));
    }

    fn both() -> Authorizer {
        Authorizer::new(vec![
            (SecretString::from("adm-token"), Role::Admin),
            (SecretString::from("read-token"), Role::Reader),
        ])
    }

    #[test]
    fn every_control_plane_rpc_not_listed_as_a_read_is_denied_to_readers() {
        let a = both();
        let methods = switchyard_proto::methods_of(CONTROL_PLANE);
        assert!(
            methods.len() >= 30,
            "the descriptor lists the RPCs: {methods:?}"
        );
        for method in &methods {
            let path = format!("/{CONTROL_PLANE}/{method}");
            let as_reader = a.authorize(&path, &headers("Bearer read-token"));
            if reader_may(&path).is_some() {
                assert!(as_reader.is_ok(), "{method} is a listed read");
            } else {
                let denied = as_reader.expect_err(method);
                assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{method}");
                assert!(denied.message().contains(method.as_str()), "{denied:?}");
            }
            assert!(
                a.authorize(&path, &headers("Bearer adm-token")).is_ok(),
                "an admin may call {method}"
            );
        }
        // Every listed read is a real RPC (a renamed one cannot linger), and
        // reads by its name: a write listed by mistake fails here, not only
        // in review.
        for (read, _) in CONTROL_PLANE_READS {
            assert!(methods.iter().any(|m| m == read), "{read} is not an RPC");
            assert!(
                ["Get", "List", "Watch", "Export"]
                    .iter()
                    .any(|verb| read.starts_with(verb))
                    || *read == "ApplyConfig",
                "{read} does not read like a read"
            );
        }
    }

    #[test]
    fn a_new_rpc_is_a_write_until_listed_whatever_its_name() {
        let a = both();
        // Names the old prefix rule (Create/Update/Delete/Rotate) let through.
        for method in [
            "PurgeAll",
            "SetMemberStatus",
            "ImportConfig",
            "GetPoolsAndPrune",
        ] {
            let path = format!("/{CONTROL_PLANE}/{method}");
            let denied = a
                .authorize(&path, &headers("Bearer read-token"))
                .expect_err(method);
            assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{method}");
        }
        // A read's name under another service is not a read.
        let denied = a
            .authorize(
                "/switchyard.v1.Other/ListPools",
                &headers("Bearer read-token"),
            )
            .expect_err("other service");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn only_health_and_reflection_are_open() {
        let a = both();
        for open in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(
                a.authorize(open, &http::HeaderMap::new()).ok(),
                Some(None),
                "{open} needs no token"
            );
        }
        // Every other path needs a token, unknown ones included.
        for closed in [
            "/grpc.health.v1.HealthX/Check",
            "/other.v1.Admin/Purge",
            "/metrics",
            "/",
            "",
        ] {
            let err = a
                .authorize(closed, &http::HeaderMap::new())
                .expect_err(closed);
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{closed}");
        }
    }

    #[test]
    fn a_reader_may_apply_only_a_dry_run() {
        let reader = Caller {
            role: Some(Role::Reader),
            name: "ci".into(),
        };
        let admin = Caller {
            role: Some(Role::Admin),
            name: "ops".into(),
        };
        assert!(reader_may_apply(Some(&reader), true).is_ok());
        let denied = reader_may_apply(Some(&reader), false).expect_err("real run");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(reader_may_apply(Some(&admin), false).is_ok());
        assert!(reader_may_apply(None, false).is_ok(), "auth off");
        assert_eq!(
            reader_may(&format!("/{CONTROL_PLANE}/ApplyConfig")),
            Some(ReaderMay::DryRunOnly)
        );
    }

    #[test]
    fn tokens_file() {
        let t = parse_tokens_file("# ops\nadmin a1 ci-bot\nreader  r1\n").expect("parses");
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].1, t[0].2.as_str()), (Role::Admin, "ci-bot"));
        assert_eq!((t[1].1, t[1].2.as_str()), (Role::Reader, "reader"));
        assert!(parse_tokens_file("root x").is_err());
        assert!(parse_tokens_file("admin a1 bad/name").is_err());
        assert!(parse_tokens_file("admin a1 n extra").is_err());
    }
}
