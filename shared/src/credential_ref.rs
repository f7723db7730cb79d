//! Which credential references a worker may resolve: `env:NAME` under an
//! allowed prefix (`--credential-env-prefix`, default `SWITCHYARD_CRED_`)
//! and `file:/path` inside one mounted folder (`--credential-dir`, none by
//! default). A reference is sent upstream as the provider's key, so a
//! reference to anything else (the master key, `REDIS_URL`, a service
//! account's token) would hand that secret to whoever set `base_url`.
//!
//! The rules here are lexical (the control plane and `switchyard validate`
//! apply them without the worker's file system); the worker also resolves
//! symlinks before reading a file (`data-plane/src/credentials.rs`) and is
//! the authority.

use std::path::{Component, Path, PathBuf};

/// The default `--credential-env-prefix`.
pub const DEFAULT_ENV_PREFIX: &str = "SWITCHYARD_CRED_";

/// Names never referenced, whatever the prefix: server settings and the
/// stores' connection strings.
const FORBIDDEN_ENV: [&str; 3] = ["SWITCHYARD_", "REDIS_", "DATABASE_"];

/// Why a reference is refused. Messages never repeat the value: a key
/// pasted into the reference field by mistake must not come back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefusedReference {
    #[error(
        "use env:VARIABLE_NAME or file:/absolute/path; put a secret itself in credential.inline"
    )]
    Malformed,
    #[error(
        "{name} is a server setting or a store's connection string (SWITCHYARD_*, REDIS_*, DATABASE_*) and is never sent upstream; use a variable named {prefix}…"
    )]
    ServerSetting { name: String, prefix: String },
    #[error(
        "environment references must name a variable starting with {prefix} (--credential-env-prefix); {name} does not"
    )]
    OutsidePrefix { name: String, prefix: String },
    #[error(
        "file references are off: start the worker (and the control plane) with --credential-dir naming the mounted secrets folder"
    )]
    NoFileDir,
    #[error(
        "file references must be an absolute path inside {dir} (--credential-dir), without '.' or '..'"
    )]
    OutsideDir { dir: String },
}

impl RefusedReference {
    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed_reference",
            Self::ServerSetting { .. } => "server_setting",
            Self::OutsidePrefix { .. } => "outside_env_prefix",
            Self::NoFileDir => "file_references_off",
            Self::OutsideDir { .. } => "outside_credential_dir",
        }
    }
}

/// A reference that passed the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference<'a> {
    Env(&'a str),
    File(&'a Path),
}

/// The allow-list: an environment prefix and, optionally, one folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceRules {
    env_prefix: String,
    dir: Option<PathBuf>,
}

impl Default for ReferenceRules {
    fn default() -> Self {
        Self {
            env_prefix: DEFAULT_ENV_PREFIX.to_owned(),
            dir: None,
        }
    }
}

impl ReferenceRules {
    /// Checks the settings themselves: a prefix that would cover a server
    /// setting (`SWITCHYARD_`, `SWITCHYARD_M`, `REDIS_`, …) is refused, as
    /// is a folder that is not an absolute, plain path.
    pub fn new(env_prefix: &str, dir: Option<PathBuf>) -> Result<Self, String> {
        let p = env_prefix.trim();
        let well_formed = p.len() >= 2
            && p.starts_with(|c: char| c.is_ascii_uppercase())
            && p.ends_with('_')
            && p.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !well_formed {
            return Err(format!(
                "--credential-env-prefix '{p}' must be upper-case letters, digits and '_', ending in '_' (e.g. {DEFAULT_ENV_PREFIX})"
            ));
        }
        let covers = |f: &str| f.starts_with(p) || p.starts_with(f);
        let under_switchyard_cred = p.starts_with("SWITCHYARD_CRED");
        if FORBIDDEN_ENV.iter().any(|f| covers(f)) && !under_switchyard_cred {
            return Err(format!(
                "--credential-env-prefix '{p}' would cover server settings (SWITCHYARD_*, REDIS_*, DATABASE_*); under SWITCHYARD_ only SWITCHYARD_CRED… prefixes are allowed"
            ));
        }
        let dir = match dir.filter(|d| !d.as_os_str().is_empty()) {
            None => None,
            Some(d) if plain_absolute(&d) && d != Path::new("/") => Some(d),
            Some(d) => {
                return Err(format!(
                    "--credential-dir '{}' must be an absolute folder other than /, without '.' or '..'",
                    d.display()
                ));
            }
        };
        Ok(Self {
            env_prefix: p.to_owned(),
            dir,
        })
    }

    pub fn env_prefix(&self) -> &str {
        &self.env_prefix
    }

    /// The folder `file:` references must be inside, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Applies the rules to `reference` (as stored: `env:NAME` or `file:/path`).
    pub fn check<'a>(&self, reference: &'a str) -> Result<Reference<'a>, RefusedReference> {
        if let Some(name) = reference.strip_prefix("env:") {
            let well_formed = name.len() <= 255
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !well_formed {
                return Err(RefusedReference::Malformed);
            }
            let upper = name.to_ascii_uppercase();
            let under_prefix = upper.starts_with(&self.env_prefix) && upper != self.env_prefix;
            let server_setting = FORBIDDEN_ENV.iter().any(|f| upper.starts_with(f))
                && !(under_prefix && self.env_prefix.starts_with("SWITCHYARD_CRED"));
            if server_setting {
                return Err(RefusedReference::ServerSetting {
                    name: name.to_owned(),
                    prefix: self.env_prefix.clone(),
                });
            }
            // Case matters to the environment: the prefix is matched as written.
            if !name.starts_with(&self.env_prefix) || name == self.env_prefix {
                return Err(RefusedReference::OutsidePrefix {
                    name: name.to_owned(),
                    prefix: self.env_prefix.clone(),
                });
            }
            return Ok(Reference::Env(name));
        }
        if let Some(path) = reference.strip_prefix("file:") {
            if path.len() > 1000 || path.chars().any(char::is_control) || !path.starts_with('/') {
                return Err(RefusedReference::Malformed);
            }
            let Some(dir) = &self.dir else {
                return Err(RefusedReference::NoFileDir);
            };
            let path = Path::new(path);
            if !plain_absolute(path) || !path.starts_with(dir) || path == dir {
                return Err(RefusedReference::OutsideDir {
                    dir: dir.display().to_string(),
                });
            }
            return Ok(Reference::File(path));
        }
        Err(RefusedReference::Malformed)
    }
}

/// Absolute, and no `.` or `..` component.
fn plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !p.to_string_lossy().contains("/./")
        && !p.to_string_lossy().ends_with("/.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(dir: Option<&str>) -> ReferenceRules {
        ReferenceRules::new(DEFAULT_ENV_PREFIX, dir.map(PathBuf::from)).expect("rules")
    }

    #[test]
    fn env_references_must_be_under_the_prefix() {
        let r = rules(None);
        assert_eq!(
            r.check("env:SWITCHYARD_CRED_OPENAI"),
            Ok(Reference::Env("SWITCHYARD_CRED_OPENAI"))
        );
        for name in ["OPENAI_API_KEY", "HOME", "PATH", "AWS_SECRET_ACCESS_KEY"] {
            assert!(
                matches!(
                    r.check(&format!("env:{name}")),
                    Err(RefusedReference::OutsidePrefix { .. })
                ),
                "{name}"
            );
        }
        // The prefix alone names nothing.
        assert!(r.check("env:SWITCHYARD_CRED_").is_err());
        let other = ReferenceRules::new("ACME_KEY_", None).expect("rules");
        assert!(other.check("env:ACME_KEY_OPENAI").is_ok());
        assert!(other.check("env:SWITCHYARD_CRED_OPENAI").is_err());
    }

    #[test]
    fn server_settings_and_store_urls_are_never_referenced() {
        for prefix in [DEFAULT_ENV_PREFIX, "ACME_", "SWITCHYARD_CREDENTIALS_"] {
            let r = ReferenceRules::new(prefix, None).expect("rules");
            for name in [
                "SWITCHYARD_MASTER_KEY",
                "SWITCHYARD_MASTER_KEY_FILE",
                "SWITCHYARD_ADMIN_TOKENS",
                "REDIS_URL",
                "DATABASE_URL",
                "redis_url",
                "Switchyard_Master_Key",
            ] {
                let err = r.check(&format!("env:{name}")).expect_err(name);
                assert!(
                    matches!(err, RefusedReference::ServerSetting { .. }),
                    "{prefix} {name}: {err:?}"
                );
                assert!(err.to_string().contains("never sent upstream"), "{err}");
            }
        }
    }

    #[test]
    fn prefixes_that_would_cover_server_settings_are_refused() {
        for bad in [
            "",
            "SWITCHYARD_",
            "SWITCHYARD_M",
            "SW",
            "REDIS_",
            "REDIS_X_",
            "DATABASE_",
            "DA",
            "lower_",
            "NO_UNDERSCORE",
        ] {
            assert!(ReferenceRules::new(bad, None).is_err(), "{bad:?}");
        }
        for ok in [
            DEFAULT_ENV_PREFIX,
            "SWITCHYARD_CREDENTIALS_",
            "ACME_",
            "LLM_KEY_",
        ] {
            assert!(ReferenceRules::new(ok, None).is_ok(), "{ok}");
        }
    }

    #[test]
    fn file_references_stay_inside_the_folder() {
        assert_eq!(
            rules(None).check("file:/run/secrets/openai"),
            Err(RefusedReference::NoFileDir)
        );
        let r = rules(Some("/run/secrets"));
        assert_eq!(
            r.check("file:/run/secrets/openai"),
            Ok(Reference::File(Path::new("/run/secrets/openai")))
        );
        for bad in [
            "file:/etc/passwd",
            "file:/run/secrets/../../etc/passwd",
            "file:/run/secrets/./openai",
            "file:/run/secrets",
            "file:/run/secretsx/openai",
            "file:/var/run/secrets/kubernetes.io/serviceaccount/token",
        ] {
            assert!(
                matches!(r.check(bad), Err(RefusedReference::OutsideDir { .. })),
                "{bad}"
            );
        }
        assert_eq!(r.check("file:relative"), Err(RefusedReference::Malformed));
        assert!(ReferenceRules::new(DEFAULT_ENV_PREFIX, Some("relative".into())).is_err());
        assert!(ReferenceRules::new(DEFAULT_ENV_PREFIX, Some("/a/../b".into())).is_err());
        assert!(ReferenceRules::new(DEFAULT_ENV_PREFIX, Some("/".into())).is_err());
    }

    #[test]
    fn refusals_never_echo_a_pasted_secret() {
        let err = rules(None)
            .check("sk-live-0123456789abcdef")
            .expect_err("bad");
        assert!(!err.to_string().contains("0123456789"), "{err}");
        for bad in ["env:", "env:1X", "vault:x", "env:A-B"] {
            assert_eq!(
                rules(None).check(bad),
                Err(RefusedReference::Malformed),
                "{bad}"
            );
        }
    }
}
