use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tokio_util::sync::CancellationToken;

use super::reload::{Seen, Step, Watcher};
use super::*;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        Self { params, key }
    }

    /// (cert PEM, key PEM) of a leaf with `cn` (none if empty) and `sans`.
    fn leaf(&self, cn: &str, sans: Vec<SanType>) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if !cn.is_empty() {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn server(&self, cn: &str) -> (String, String) {
        self.leaf(
            cn,
            vec![SanType::DnsName("localhost".try_into().expect("dns"))],
        )
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem")
}

/// Writes a pair into `dir`; returns the paths.
fn write_pair(dir: &Path, pair: &(String, String)) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &pair.0).expect("write cert");
    std::fs::write(&key, &pair.1).expect("write key");
    (cert, key)
}

fn served_subject(tls: &ServerTls) -> String {
    tls.current().subject
}

#[test]
fn start_up_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let (cert, key) = write_pair(dir.path(), &ca.server("a"));
    let missing = dir.path().join("missing.pem");

    let err = ServerTls::load(&missing, &key, None).expect_err("missing cert");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    // A key from another pair.
    let other = dir.path().join("other.key");
    std::fs::write(&other, ca.server("b").1).expect("write");
    let err = ServerTls::load(&cert, &other, None).expect_err("mismatch");
    assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("other.key"), "{err}");

    // The key given as the certificate, and the other way round.
    let err = ServerTls::load(&key, &key, None).expect_err("no cert");
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    let err = ServerTls::load(&cert, &cert, None).expect_err("no key");
    assert!(matches!(err, TlsError::NoKey { .. }), "{err}");

    let junk = dir.path().join("ca.pem");
    std::fs::write(&junk, "not pem").expect("write");
    let err = ServerTls::load(&cert, &key, Some(&junk)).expect_err("bad CA");
    assert!(err.to_string().contains("ca.pem"), "{err}");

    let ok = ServerTls::load(&cert, &key, None).expect("loads");
    assert_eq!(ok.mode(), "tls");
    assert_eq!(served_subject(&ok), "CN=a");
}

#[test]
fn the_identity_is_the_cn_or_else_the_first_dns_or_uri_san() {
    let ca = Ca::new();
    let with_cn = ca.leaf(
        "alice",
        vec![SanType::DnsName("a.example".try_into().expect("dns"))],
    );
    assert_eq!(identity_of(&der(&with_cn.0)).as_deref(), Some("alice"));
    let dns = ca.leaf(
        "",
        vec![SanType::DnsName("svc.example".try_into().expect("dns"))],
    );
    assert_eq!(identity_of(&der(&dns.0)).as_deref(), Some("svc.example"));
    let uri = ca.leaf(
        "",
        vec![SanType::URI(
            "spiffe://cluster/ns/a/sa/b".try_into().expect("uri"),
        )],
    );
    assert_eq!(
        identity_of(&der(&uri.0)).as_deref(),
        Some("spiffe://cluster/ns/a/sa/b")
    );
    assert_eq!(identity_of(&der(&ca.leaf("", vec![]).0)), None);
    assert_eq!(client_identity(&http::Extensions::new()), None);
}

fn seen(pair: &(String, String)) -> Seen {
    Seen::Pair {
        cert: pair.0.clone().into_bytes(),
        key: pair.1.clone().into_bytes(),
    }
}

#[test]
fn a_bad_pair_is_looked_at_twice_then_reported_once_and_a_good_one_replaces_it() {
    let ca = Ca::new();
    let (a, b) = (ca.server("a"), ca.server("b"));
    let mut w = Watcher::new(
        "c".into(),
        "k".into(),
        (a.0.clone().into(), a.1.clone().into()),
    );
    assert!(matches!(w.step(seen(&a)), Step::Same));

    // b's certificate with a's key: perhaps half-written, then reported once.
    let half = (b.0.clone(), a.1.clone());
    assert!(matches!(w.step(seen(&half)), Step::NotYet));
    match w.step(seen(&half)) {
        Step::Refuse(why) => assert!(why.contains("does not match"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    for _ in 0..3 {
        assert!(matches!(w.step(seen(&half)), Step::StillRefused));
    }
    // A different bad state starts over; an unreadable file is one too.
    let gone = Seen::Unreadable("cannot read c: gone".into());
    assert!(matches!(w.step(gone.clone()), Step::NotYet));
    assert!(matches!(w.step(gone), Step::Refuse(_)));

    match w.step(seen(&b)) {
        Step::Reload(loaded) => assert_eq!(loaded.info.subject, "CN=b"),
        other => panic!("expected a reload, got {other:?}"),
    }
    assert!(matches!(w.step(seen(&b)), Step::Same));
    // Back to a bad pair, then back to the one in use: nothing to report.
    assert!(matches!(w.step(seen(&half)), Step::NotYet));
    assert!(matches!(w.step(seen(&b)), Step::Same));
    assert!(matches!(w.step(seen(&half)), Step::NotYet));
}

fn reload_count(tls: &ServerTls, result: &'static str) -> u64 {
    tls.inner
        .metrics
        .reloads
        .get_or_create(&n::Outcome { result })
        .get()
}

/// Lets the watcher's file reads finish (they run on blocking threads).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn rotation_is_picked_up_at_the_next_look_and_a_bad_pair_keeps_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let (cert, key) = write_pair(dir.path(), &ca.server("first"));
    let tls = ServerTls::load(&cert, &key, None).expect("load");
    let stop = CancellationToken::new();
    let every = Duration::from_secs(2);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(tls.clone().watch_every(every, stop.clone()));

    write_pair(dir.path(), &ca.server("second"));
    tokio::time::sleep(Duration::from_millis(1900)).await;
    assert_eq!(served_subject(&tls), "CN=first", "not before the next look");
    tokio::time::sleep(Duration::from_millis(150)).await;
    settle().await;
    assert_eq!(served_subject(&tls), "CN=second");
    assert_eq!(reload_count(&tls, "ok"), 1);

    // A key that does not match: kept, reported once over many looks.
    let third = ca.server("third");
    std::fs::write(&cert, &third.0).expect("write cert only");
    for _ in 0..5 {
        tokio::time::sleep(every).await;
        settle().await;
    }
    assert_eq!(served_subject(&tls), "CN=second");
    assert_eq!(reload_count(&tls, "error"), 1, "reported once");

    // The key arrives: served at the next look.
    std::fs::write(&key, &third.1).expect("write key");
    tokio::time::sleep(every).await;
    settle().await;
    assert_eq!(served_subject(&tls), "CN=third");

    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

#[tokio::test(start_paused = true)]
async fn a_swapped_symlink_is_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    // Kubernetes: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>.
    let v1 = dir.path().join("v1");
    let v2 = dir.path().join("v2");
    std::fs::create_dir(&v1).expect("mkdir");
    std::fs::create_dir(&v2).expect("mkdir");
    write_pair(&v1, &ca.server("v1"));
    write_pair(&v2, &ca.server("v2"));
    let data = dir.path().join("..data");
    std::os::unix::fs::symlink(&v1, &data).expect("symlink");
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(data.join(f), dir.path().join(f)).expect("symlink");
    }
    let tls = ServerTls::load(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        None,
    )
    .expect("load");
    assert_eq!(served_subject(&tls), "CN=v1");
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        tls.clone()
            .watch_every(Duration::from_secs(2), stop.clone()),
    );

    // The swap: a new link renamed over the old one.
    let tmp = dir.path().join("..data_tmp");
    std::os::unix::fs::symlink(&v2, &tmp).expect("symlink");
    std::fs::rename(&tmp, &data).expect("rename");
    tokio::time::sleep(Duration::from_millis(2050)).await;
    settle().await;
    assert_eq!(served_subject(&tls), "CN=v2");
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

#[test]
fn the_flags_go_together() {
    use crate::args::TlsArgs;
    let path = |p: &str| Some(PathBuf::from(p));
    let load = |cert, key, ca, metrics_tls| {
        TlsArgs {
            tls_cert: cert,
            tls_key: key,
            tls_client_ca: ca,
            metrics_tls,
        }
        .load()
        .map(|t| t.is_some())
    };
    assert_eq!(load(None, None, None, false), Ok(false), "plaintext");
    assert_eq!(
        load(path(""), path(""), None, false),
        Ok(false),
        "empty = unset"
    );
    for (args, want) in [
        ((path("c"), None, None, false), "--tls-cert needs --tls-key"),
        ((None, path("k"), None, false), "--tls-key needs --tls-cert"),
        ((None, None, path("ca"), false), "--tls-client-ca needs"),
        ((None, None, None, true), "--metrics-tls needs"),
    ] {
        let err = load(args.0, args.1, args.2, args.3).expect_err(want);
        assert!(err.contains(want), "{err}");
    }
}
