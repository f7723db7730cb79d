//! The report: one table row per measured run, derived figures (each beside
//! the `direct` baseline of the same run), problems, and one JSON line.

use std::fmt::Display;

use serde_json::{Map, Value, json};

use crate::stats::Run;

/// One measured run and what the processes did meanwhile.
pub struct Row {
    pub name: String,
    pub run: Run,
    /// WARN/ERROR lines the worker(s) under test logged meanwhile, "w/e".
    pub logs: String,
    /// CPU (user+sys) per request of the process under test: the worker for
    /// worker rows, the fake upstream for direct rows; microseconds.
    pub cpu_us: Option<f64>,
    /// CPU per request of the bench, the fake and the worker under test together.
    pub all_cpu_us: Option<f64>,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    derived: Vec<String>,
    pub json: Map<String, Value>,
    pub problems: Vec<String>,
}

/// p50 and p99 of `x` minus those of `base`, in microseconds.
pub fn diff(x: &Run, base: &Run) -> (i64, i64) {
    (x.p(0.5) as i64 - base.p(0.5) as i64, x.p(0.99) as i64 - base.p(0.99) as i64)
}

/// Signed microseconds as milliseconds, "+0.123".
pub fn ms(us: i64) -> String {
    format!("{:+.3}", us as f64 / 1000.0)
}

pub fn goal(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

impl Report {
    pub fn run(&self, name: &str) -> Option<&Run> {
        self.rows.iter().find(|r| r.name == name).map(|r| &r.run)
    }

    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// A derived figure: printed now (to stderr) and again in the final report.
    pub fn line(&mut self, label: &str, text: impl Display) {
        let line = format!("  {label:<38} {text}");
        eprintln!("{line}");
        self.derived.push(line);
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_string(), value);
    }

    /// "p50 +x ms   p99 +y ms" of row `x` minus row `base` (both must exist),
    /// printed with `extra` and stored as `{key}_p50_us` / `{key}_p99_us`.
    pub fn added(&mut self, label: &str, key: &str, x: &str, base: &str, extra: &str) -> Option<(i64, i64)> {
        let (d50, d99) = diff(self.run(x)?, self.run(base)?);
        self.line(label, format!("p50 {} ms   p99 {} ms{extra}", ms(d50), ms(d99)));
        self.set(&format!("{key}_p50_us"), json!(d50));
        self.set(&format!("{key}_p99_us"), json!(d99));
        Some((d50, d99))
    }

    /// The worker's CPU per request in row `worker` as a ratio to the fake's
    /// per request in the direct row `direct`, and the same for all processes.
    pub fn cpu_ratio(&mut self, label: &str, key: &str, worker: &str, direct: &str) {
        let (Some(w), Some(d)) = (self.row(worker), self.row(direct)) else { return };
        let (wa, da) = (w.all_cpu_us, d.all_cpu_us);
        let Some((w, d)) = w.cpu_us.zip(d.cpu_us) else {
            self.line(label, "unavailable (/proc unreadable or no requests)");
            return;
        };
        let ratio = |x: f64, y: f64| if y > 0.0 { format!("{:.2}x", x / y) } else { "n/a".into() };
        let mut text = format!("worker {w:.1} us/req vs fake {d:.1} us per direct request: {}", ratio(w, d));
        if let Some((wa, da)) = wa.zip(da) {
            text += &format!("; all processes {wa:.1} vs {da:.1} us/req: {}", ratio(wa, da));
        }
        self.line(label, text);
        self.set(&format!("{key}_worker_cpu_us"), json!(round1(w)));
        self.set(&format!("{key}_direct_cpu_us"), json!(round1(d)));
        self.set(&format!("{key}_cpu_ratio"), json!(if d > 0.0 { (w / d * 100.0).round() / 100.0 } else { 0.0 }));
    }

    /// Prints the table, the derived figures, the problems, then the JSON line.
    pub fn print(&mut self, header: &str) {
        println!("\n{header}");
        println!(
            "{:<34}      ok errors    p50 ms    p90 ms    p99 ms    max ms     req/s cpu us/req  dp w/e",
            "scenario"
        );
        let mut scenarios = Map::new();
        for Row { name, run: r, logs, cpu_us, .. } in &self.rows {
            let [p50, p90, p99, max] = [r.p(0.5), r.p(0.9), r.p(0.99), r.hist.max()];
            let [m50, m90, m99, mmax] = [p50, p90, p99, max].map(|us| us as f64 / 1000.0);
            let (ok, err, rps) = (r.ok, r.errors, r.rps());
            let rps_text = if r.secs > 0.0 { format!("{rps:.0}") } else { "-".into() };
            let cpu = cpu_us.map_or("-".into(), |v| format!("{v:.1}"));
            println!(
                "{name:<34} {ok:>7} {err:>6} {m50:>9.3} {m90:>9.3} {m99:>9.3} {mmax:>9.3} {rps_text:>9} {cpu:>10} {logs:>7}"
            );
            let row = json!({"ok": ok, "errors": err, "p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": max,
                "rps": round1(rps), "cpu_us_per_request": cpu_us.map(round1)});
            scenarios.insert(name.clone(), row);
        }
        println!("\nderived figures");
        self.derived.iter().for_each(|l| println!("{l}"));
        let samples = self.rows.iter().flat_map(|r| r.run.samples.iter().map(move |s| format!("{}: {s}", r.name)));
        let problems: Vec<String> = samples.chain(self.problems.iter().cloned()).collect();
        println!("\nproblems: {}", if problems.is_empty() { "none" } else { "" });
        problems.iter().for_each(|p| println!("  {p}"));
        self.set("scenarios", Value::Object(scenarios));
        println!("\n{}", Value::Object(std::mem::take(&mut self.json)));
    }
}
