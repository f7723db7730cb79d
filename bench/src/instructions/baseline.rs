//! The committed baseline (`bench/instructions.json`: instructions per request
//! of each path, and where and when they were measured), the comparison of a
//! new measurement with it, and writing a new one.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

/// The baseline file as read.
pub struct Baseline {
    /// Path name → instructions per request.
    pub figures: BTreeMap<String, f64>,
    /// The cargo profile the worker was built with (the binaries' directory name).
    pub profile: Option<String>,
    /// What else the file says (commit, date, requests, valgrind).
    pub meta: serde_json::Map<String, Value>,
}

pub fn read(file: &Path) -> Result<Baseline, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("cannot read the baseline {}: {e}", file.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
    let Value::Object(mut meta) = v else { return Err(format!("{}: not a JSON object", file.display())) };
    let figures = match meta.remove("instructions_per_request") {
        Some(Value::Object(m)) => m.into_iter().filter_map(|(k, v)| Some((k, v.as_f64()?))).collect(),
        _ => return Err(format!("{}: no \"instructions_per_request\" object", file.display())),
    };
    let profile = meta.get("profile").and_then(Value::as_str).map(str::to_string);
    Ok(Baseline { figures, profile, meta })
}

impl Baseline {
    /// "commit abc1234, 2026-12-07", as far as the file says.
    pub fn measured_at(&self) -> String {
        let field = |k: &str| self.meta.get(k).and_then(Value::as_str).unwrap_or("unknown").to_string();
        format!("commit {}, {}", field("commit"), field("date"))
    }
}

/// One path's figure against its baseline.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Within the tolerance either way.
    Ok,
    /// More than the tolerance above: the gate fails.
    Above,
    /// More than the tolerance below: the baseline should be updated.
    Below,
    /// The baseline has no figure for this path.
    New,
}

/// `measured` against `baseline` with a tolerance in percent; also the ratio.
pub fn judge(measured: f64, baseline: Option<f64>, tolerance_percent: f64) -> (Verdict, Option<f64>) {
    let Some(base) = baseline.filter(|b| *b > 0.0) else { return (Verdict::New, None) };
    let ratio = measured / base;
    let verdict = match (ratio - 1.0) * 100.0 {
        d if d > tolerance_percent => Verdict::Above,
        d if d < -tolerance_percent => Verdict::Below,
        _ => Verdict::Ok,
    };
    (verdict, Some(ratio))
}

/// Writes `figures` (merged over the old baseline's other paths) with `meta`.
pub fn write(
    file: &Path,
    old: Option<Baseline>,
    figures: &[(String, f64)],
    meta: serde_json::Map<String, Value>,
) -> Result<(), String> {
    let mut all: BTreeMap<String, u64> =
        old.map(|b| b.figures.into_iter().map(|(k, v)| (k, v.round() as u64)).collect()).unwrap_or_default();
    all.extend(figures.iter().map(|(k, v)| (k.clone(), v.round() as u64)));
    let mut out = meta;
    out.insert("instructions_per_request".into(), json!(all));
    let text = serde_json::to_string_pretty(&Value::Object(out)).map_err(|e| format!("baseline: {e}"))?;
    std::fs::write(file, text + "\n").map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Where and when: `git describe --always --dirty` of the checkout holding
/// `dir`, and today's UTC date.
pub fn provenance(dir: &Path) -> (String, String) {
    let run = |cmd: &str, args: &[&str]| {
        let out = std::process::Command::new(cmd).args(args).current_dir(dir).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let commit = run("git", &["describe", "--always", "--dirty", "--abbrev=7"]);
    let date = run("date", &["-u", "+%Y-%m-%d"]);
    (commit.unwrap_or_else(|| "unknown".into()), date.unwrap_or_else(|| "unknown".into()))
}

#[cfg(test)]
mod tests {
    use super::{Verdict, judge};

    #[test]
    fn more_than_the_tolerance_above_fails_and_below_asks_for_an_update() {
        assert_eq!(judge(104_990.0, Some(100_000.0), 5.0).0, Verdict::Ok);
        assert_eq!(judge(105_100.0, Some(100_000.0), 5.0).0, Verdict::Above);
        assert_eq!(judge(95_010.0, Some(100_000.0), 5.0).0, Verdict::Ok);
        assert_eq!(judge(94_900.0, Some(100_000.0), 5.0).0, Verdict::Below);
        assert_eq!(judge(94_900.0, None, 5.0).0, Verdict::New);
        assert_eq!(judge(110_000.0, Some(100_000.0), 5.0).1, Some(1.1));
    }
}
