//! Running the worker under callgrind, and reading the instructions it counted.

use std::path::Path;

/// `valgrind --version` ("valgrind-3.22.0"), or a clear error when it is missing.
pub fn version(valgrind: &str) -> Result<String, String> {
    let out = std::process::Command::new(valgrind).arg("--version").output().map_err(|e| {
        format!("cannot run {valgrind} ({e}): install it (apt-get install valgrind) or pass --valgrind")
    })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || text.is_empty() {
        return Err(format!("{valgrind} --version failed ({}): {text}", out.status));
    }
    Ok(text)
}

/// The command in front of the worker: callgrind counting instructions (Ir)
/// only, written to `out` when the worker exits, per function and line (the
/// default; without lines callgrind says so on stderr and keeps them anyway).
pub fn wrapper(valgrind: &str, out: &Path) -> Vec<String> {
    [valgrind, "--tool=callgrind", "--quiet", "--dump-instr=no"]
        .into_iter()
        .map(str::to_string)
        .chain([format!("--callgrind-out-file={}", out.display())])
        .collect()
}

/// The total instructions of a callgrind output file: its `totals:` line,
/// else its `summary:` line.
pub fn total(file: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    parse_total(&text).ok_or_else(|| format!("{}: no totals: or summary: line", file.display()))
}

fn parse_total(text: &str) -> Option<u64> {
    let line = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next());
    line("totals:").or_else(|| line("summary:"))?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_total;

    #[test]
    fn reads_totals_then_summary() {
        let file = "version: 1\ncreator: callgrind-3.22.0\nevents: Ir\nfn=(1) main\n3 12\nsummary: 500\ntotals: 512\n";
        assert_eq!(parse_total(file), Some(512));
        assert_eq!(parse_total("events: Ir\nsummary: 77\n"), Some(77));
        assert_eq!(parse_total("events: Ir\nfn=(1) main\n"), None);
    }
}
