//! A provider's credential, resolved once per config load, or the reason
//! the provider is refused: a reference outside the allow-list
//! (`--credential-env-prefix`, `--credential-dir`), one that resolves to
//! nothing, an inline credential this worker cannot open. A refused
//! provider's members are not served — never called without their key, and
//! never called with a secret the allow-list keeps in (README "Security").

use std::path::Path;

use secrecy::SecretString;
use switchyard_proto::v1 as pb;
use switchyard_shared::credential_ref::{Reference, ReferenceRules, RefusedReference};
use switchyard_shared::seal::MasterKeys;

/// Where credential references are read from (tests pass their own).
pub trait Secrets: Send + Sync {
    fn env(&self, name: &str) -> Option<String>;
    /// Reads `path`, which must still be inside `dir` once symlinks are
    /// resolved; `Ok(None)` when there is no such file.
    fn file(&self, dir: &Path, path: &Path) -> Result<Option<String>, Refusal>;
}

/// The process environment and file system.
pub struct ProcessSecrets;

/// Credential files are small; a larger one is not a key.
const MAX_FILE: u64 = 64 * 1024;

// The one place credential references are read: `env:` from the process
// environment, `file:` from a (small, mounted) file, once per config load,
// off the request path.
#[allow(clippy::disallowed_methods)]
impl Secrets for ProcessSecrets {
    fn env(&self, name: &str) -> Option<String> {
        // Secrets mounted from files or Kubernetes often end in a newline.
        std::env::var(name).ok().map(|s| s.trim().to_owned())
    }
    fn file(&self, dir: &Path, path: &Path) -> Result<Option<String>, Refusal> {
        let escapes = || Refusal::Escapes {
            dir: dir.display().to_string(),
        };
        let Ok(real_dir) = std::fs::canonicalize(dir) else {
            return Ok(None);
        };
        let real = match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(_) => return Ok(None),
        };
        if !real.starts_with(&real_dir) || real == real_dir {
            return Err(escapes());
        }
        let meta = std::fs::metadata(&real).map_err(|_| Refusal::Unresolved)?;
        if !meta.is_file() || meta.len() > MAX_FILE {
            return Err(Refusal::NotAKeyFile);
        }
        Ok(std::fs::read_to_string(&real)
            .ok()
            .map(|s| s.trim().to_owned()))
    }
}

/// Why a provider is not served. Messages name rules and flags, never a
/// secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("credential reference refused: {0}")]
    Reference(#[from] RefusedReference),
    #[error("credential file resolves outside {dir} (--credential-dir) through a symlink")]
    Escapes { dir: String },
    #[error(
        "credential reference resolves to nothing (the variable is unset or empty, or the file is missing or empty)"
    )]
    Unresolved,
    #[error("credential file is not a regular file of at most 64 KiB")]
    NotAKeyFile,
    #[error("inline credential, but this worker has no master key (SWITCHYARD_MASTER_KEY)")]
    NoMasterKey,
    #[error(
        "inline credential does not open with this worker's master key (nor --previous-master-key)"
    )]
    Sealed,
    #[error(
        "provider kind {0} is unknown to this worker (an older worker than the control plane?)"
    )]
    UnknownKind(i32),
    #[error("the member uses key '{0}', which its provider does not have")]
    UnknownKey(String),
}

impl Refusal {
    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Reference(r) => r.label(),
            Self::Escapes { .. } => "outside_credential_dir",
            Self::Unresolved => "unresolved_reference",
            Self::NotAKeyFile => "not_a_key_file",
            Self::NoMasterKey => "no_master_key",
            Self::Sealed => "sealed_with_other_key",
            Self::UnknownKind(_) => "unknown_provider_kind",
            Self::UnknownKey(_) => "unknown_key",
        }
    }
}

/// What a worker resolves credentials with.
pub struct Resolver {
    pub keys: Option<MasterKeys>,
    pub rules: ReferenceRules,
    pub secrets: Box<dyn Secrets>,
}

/// No master key, the default allow-list, the process's environment.
impl Default for Resolver {
    fn default() -> Self {
        Self {
            keys: None,
            rules: ReferenceRules::default(),
            secrets: Box::new(ProcessSecrets),
        }
    }
}

impl Resolver {
    /// The provider's credential, its key named "default" (None: the
    /// provider has none).
    pub fn credential(&self, p: &pb::SnapshotProvider) -> Result<Option<SecretString>, Refusal> {
        self.open(p.id.as_bytes(), p.credential.as_ref())
    }

    /// One of the provider's named keys, resolved like its own credential
    /// (an inline one is sealed, as the control plane seals it, bound to the
    /// provider's id: it cannot move to another provider).
    pub fn key(
        &self,
        p: &pb::SnapshotProvider,
        k: &pb::SnapshotProviderKey,
    ) -> Result<Option<SecretString>, Refusal> {
        self.open(p.id.as_bytes(), k.credential.as_ref())
    }

    fn open(
        &self,
        context: &[u8],
        c: Option<&pb::SnapshotCredential>,
    ) -> Result<Option<SecretString>, Refusal> {
        use pb::credential_info::Source;
        let Some(c) = c else {
            return Ok(None);
        };
        let Some(info) = c.info.as_ref() else {
            return Ok(None);
        };
        match Source::try_from(info.source).unwrap_or(Source::None) {
            Source::None => Ok(None),
            Source::Inline => {
                let keys = self.keys.as_ref().ok_or(Refusal::NoMasterKey)?;
                keys.open(context, &c.sealed)
                    .map(Some)
                    .map_err(|_| Refusal::Sealed)
            }
            Source::Reference => {
                let found = match self.rules.check(&info.reference)? {
                    Reference::Env(name) => self.secrets.env(name),
                    Reference::File(path) => {
                        // `check` returned a file, so the rules have a folder.
                        let dir = self.rules.dir().ok_or(RefusedReference::NoFileDir)?;
                        self.secrets.file(dir, path)?
                    }
                };
                match found.filter(|s| !s.is_empty()) {
                    Some(s) => Ok(Some(SecretString::from(s))),
                    None => Err(Refusal::Unresolved),
                }
            }
        }
    }
}

/// Whether a credential is configured at all (a source other than none).
pub fn configured(c: Option<&pb::SnapshotCredential>) -> bool {
    c.and_then(|c| c.info.as_ref()).is_some_and(|i| {
        !matches!(
            pb::credential_info::Source::try_from(i.source),
            Ok(pb::credential_info::Source::None) | Err(_)
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use secrecy::ExposeSecret as _;
    use switchyard_shared::credential_ref::DEFAULT_ENV_PREFIX;
    use switchyard_shared::seal::MasterKey;

    use super::*;

    /// Environment from a map; files from the real file system.
    struct Env(HashMap<&'static str, &'static str>);
    impl Secrets for Env {
        fn env(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
        fn file(&self, dir: &Path, path: &Path) -> Result<Option<String>, Refusal> {
            ProcessSecrets.file(dir, path)
        }
    }

    fn resolver(dir: Option<PathBuf>, keys: Option<MasterKeys>) -> Resolver {
        Resolver {
            keys,
            rules: ReferenceRules::new(DEFAULT_ENV_PREFIX, dir).expect("rules"),
            secrets: Box::new(Env(HashMap::from([
                ("SWITCHYARD_CRED_OPENAI", "sk-allowed"),
                ("SWITCHYARD_MASTER_KEY", "the-master-key"),
                ("REDIS_URL", "redis://:pw@host"),
                ("OPENAI_API_KEY", "sk-outside"),
                ("SWITCHYARD_CRED_EMPTY", ""),
            ]))),
        }
    }

    fn reference(r: &str) -> pb::SnapshotProvider {
        pb::SnapshotProvider {
            id: "prov-id".into(),
            name: "prov".into(),
            credential: Some(pb::SnapshotCredential {
                info: Some(pb::CredentialInfo {
                    source: pb::credential_info::Source::Reference.into(),
                    reference: r.into(),
                    ..Default::default()
                }),
                sealed: Vec::new(),
            }),
            ..Default::default()
        }
    }

    fn secret(r: &Resolver, p: &pb::SnapshotProvider) -> Result<String, Refusal> {
        r.credential(p)
            .map(|s| s.map(|s| s.expose_secret().to_owned()).unwrap_or_default())
    }

    #[test]
    fn env_references_resolve_only_under_the_prefix() {
        let r = resolver(None, None);
        assert_eq!(
            secret(&r, &reference("env:SWITCHYARD_CRED_OPENAI")),
            Ok("sk-allowed".to_owned())
        );
        for (reference_, label) in [
            ("env:SWITCHYARD_MASTER_KEY", "server_setting"),
            ("env:REDIS_URL", "server_setting"),
            ("env:OPENAI_API_KEY", "outside_env_prefix"),
            ("env:SWITCHYARD_CRED_UNSET", "unresolved_reference"),
            ("env:SWITCHYARD_CRED_EMPTY", "unresolved_reference"),
            ("file:/etc/passwd", "file_references_off"),
        ] {
            let err = secret(&r, &reference(reference_)).expect_err(reference_);
            assert_eq!(err.label(), label, "{reference_}: {err}");
            for value in ["the-master-key", "redis://", "sk-outside"] {
                assert!(!err.to_string().contains(value), "{err}");
            }
        }
    }

    #[test]
    fn file_references_cannot_leave_the_folder_by_dots_or_symlinks() {
        let root = std::env::temp_dir().join(format!("sy-cred-{}", uuid::Uuid::new_v4()));
        let dir = root.join("secrets");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("openai"), "sk-from-file\n").expect("write");
        std::fs::write(root.join("outside"), "sk-outside").expect("write");
        std::os::unix::fs::symlink(root.join("outside"), dir.join("link-out")).expect("symlink");
        std::os::unix::fs::symlink(dir.join("openai"), dir.join("link-in")).expect("symlink");
        std::os::unix::fs::symlink(&root, dir.join("up")).expect("symlink");
        std::fs::create_dir(dir.join("sub")).expect("mkdir");
        let r = resolver(Some(dir.clone()), None);
        let at = |name: &str| reference(&format!("file:{}", dir.join(name).display()));
        assert_eq!(secret(&r, &at("openai")), Ok("sk-from-file".to_owned()));
        assert_eq!(secret(&r, &at("link-in")), Ok("sk-from-file".to_owned()));
        assert_eq!(
            secret(&r, &at("link-out")).map_err(|e| e.label()),
            Err("outside_credential_dir")
        );
        assert_eq!(
            secret(&r, &at("up/outside")).map_err(|e| e.label()),
            Err("outside_credential_dir")
        );
        assert_eq!(
            secret(&r, &at("../outside")).map_err(|e| e.label()),
            Err("outside_credential_dir")
        );
        assert_eq!(secret(&r, &at("missing")), Err(Refusal::Unresolved));
        assert_eq!(secret(&r, &at("sub")), Err(Refusal::NotAKeyFile));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn inline_credentials_need_a_key_that_opens_them() {
        let (old, new) = (
            MasterKey::from_base64(&MasterKey::generate_base64()).expect("key"),
            MasterKey::from_base64(&MasterKey::generate_base64()).expect("key"),
        );
        let mut p = reference("");
        let c = p.credential.as_mut().expect("credential");
        c.info.as_mut().expect("info").source = pb::credential_info::Source::Inline.into();
        c.sealed = old
            .seal(b"prov-id", &SecretString::from("sk-inline".to_owned()))
            .expect("seal");
        assert_eq!(secret(&resolver(None, None), &p), Err(Refusal::NoMasterKey));
        let only_new = resolver(None, Some(MasterKeys::new(new.clone(), None)));
        assert_eq!(secret(&only_new, &p), Err(Refusal::Sealed));
        let rotating = resolver(None, Some(MasterKeys::new(new, Some(old))));
        assert_eq!(secret(&rotating, &p), Ok("sk-inline".to_owned()));
    }

    #[test]
    fn a_named_key_opens_only_under_its_provider() {
        let master = MasterKey::from_base64(&MasterKey::generate_base64()).expect("key");
        let r = resolver(None, Some(MasterKeys::new(master.clone(), None)));
        let p = reference("");
        let sealed_under = |context: &[u8]| pb::SnapshotProviderKey {
            name: "k1".into(),
            credential: Some(pb::SnapshotCredential {
                info: Some(pb::CredentialInfo {
                    source: pb::credential_info::Source::Inline.into(),
                    ..Default::default()
                }),
                sealed: master
                    .seal(context, &SecretString::from("sk-k1".to_owned()))
                    .expect("seal"),
            }),
        };
        let open = |k: &pb::SnapshotProviderKey| {
            r.key(&p, k)
                .map(|s| s.map(|s| s.expose_secret().to_owned()))
        };
        assert_eq!(
            open(&sealed_under(b"prov-id")),
            Ok(Some("sk-k1".to_owned()))
        );
        // Sealed for another provider: it does not open here.
        assert_eq!(open(&sealed_under(b"other-id")), Err(Refusal::Sealed));
        // References resolve as the provider's own do.
        let by_reference = pb::SnapshotProviderKey {
            name: "k1".into(),
            credential: reference("env:SWITCHYARD_CRED_OPENAI").credential,
        };
        assert_eq!(open(&by_reference), Ok(Some("sk-allowed".to_owned())));
        assert!(configured(by_reference.credential.as_ref()));
        assert!(!configured(None));
    }
}
