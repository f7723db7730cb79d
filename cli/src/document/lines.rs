//! Reading a config file: YAML errors with their line, then every rule the
//! control plane would apply that needs no database, each pointed at the
//! line of the provider, pool, member or route it is about.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;
use switchyard_control_plane::store::offline::{At, check_document};
use switchyard_shared::credential_ref::ReferenceRules;

use super::{Document, VERSION};

/// One thing wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Where each list item starts: the same file read a second time, keeping
/// only positions.
#[derive(Deserialize, Default)]
struct Lines {
    #[serde(default)]
    version: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    providers: Vec<Spanned<IgnoredAny>>,
    #[serde(default)]
    pools: Vec<Spanned<PoolLines>>,
    #[serde(default)]
    routes: Vec<Spanned<IgnoredAny>>,
}

#[derive(Deserialize, Default)]
struct PoolLines {
    #[serde(default)]
    members: Vec<Spanned<IgnoredAny>>,
}

impl Lines {
    fn of(&self, at: At) -> Option<u64> {
        let line = |s: &Spanned<_>| Some(s.referenced.line());
        match at {
            At::Provider(i) => self.providers.get(i).and_then(line),
            At::Pool(i) => self.pools.get(i).map(|p| p.referenced.line()),
            At::Route(i) => self.routes.get(i).and_then(line),
            At::Member(i) => self
                .pools
                .iter()
                .flat_map(|p| p.value.members.iter())
                .nth(i)
                .and_then(line),
        }
    }
}

/// The file as a document, or everything wrong with it. Credential
/// references are checked against `rules` when given (`validate`); `apply`
/// leaves them to the server, whose flags may differ from this shell's.
pub fn parse(text: &str, rules: Option<&ReferenceRules>) -> Result<Document, Vec<Problem>> {
    let doc: Document = serde_saphyr::from_str(text).map_err(|e| {
        vec![Problem {
            line: e.location().map(|l| l.line()),
            message: first_line(&e.to_string()),
        }]
    })?;
    let lines: Lines = serde_saphyr::from_str(text).unwrap_or_default();
    let mut problems = Vec::new();
    if doc.version != VERSION {
        problems.push(Problem {
            line: lines.version.as_ref().map(|v| v.referenced.line()),
            message: format!(
                "version is '{}'; this switchyard reads '{VERSION}'",
                switchyard_control_plane::validate::clip(&doc.version)
            ),
        });
    }
    for (i, t) in doc
        .routes
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.tiers.iter().map(move |t| (i, t)))
    {
        if t.pool.is_some() && t.direct.is_some() {
            problems.push(Problem {
                line: lines.of(At::Route(i)),
                message: format!(
                    "route '{}': a tier has both pool and direct; give one",
                    doc.routes[i].name
                ),
            });
        }
    }
    for (at, message) in check_document(&doc.to_proto(), rules) {
        problems.push(Problem {
            line: lines.of(at),
            message,
        });
    }
    if problems.is_empty() {
        Ok(doc)
    } else {
        Err(problems)
    }
}

/// The YAML library's message without its source snippet (we print the line).
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_owned()
}
