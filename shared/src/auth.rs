//! Bearer-token access: admin tokens may write, reader tokens may only read
//! (on the data plane every configured token may call inference).
//!
//! A tower filter in front of every service, so no handler can forget it.
//! grpc.health.v1 and reflection stay open (probes and `grpcurl list` need
//! them; they expose no configuration).

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq as _;
use tonic::Status;
use tower::BoxError;

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
        if !path.starts_with("/switchyard.") {
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
        let method = path.rsplit('/').next().unwrap_or_default();
        let writes = ["Create", "Update", "Delete", "Rotate"]
            .iter()
            .any(|p| method.starts_with(p));
        if writes && role != Role::Admin {
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
