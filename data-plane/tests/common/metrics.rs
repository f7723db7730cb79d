//! Scraping a server's `/metrics` and reading samples out of it.
#![allow(dead_code)]

use switchyard_testkit::harness::ServerProc;

/// The `addr` of a server's first log line whose message is `message`.
pub fn logged_addr(p: &ServerProc, message: &str) -> Option<String> {
    p.logs().lines().find_map(|line| {
        let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
        (v.get("message").and_then(|m| m.as_str()) == Some(message))
            .then(|| v.get("addr").and_then(|a| a.as_str()).map(str::to_owned))
            .flatten()
    })
}

/// Where a server logged "metrics listening" (its admin port).
pub fn metrics_addr(p: &ServerProc) -> String {
    logged_addr(p, "metrics listening")
        .unwrap_or_else(|| panic!("no 'metrics listening' line; logs:\n{}", p.logs()))
}

/// Where a worker's OpenAI-compatible HTTP door listens (waits up to 10 s
/// for the line: the door logs it from its own task).
pub async fn http_addr(p: &ServerProc) -> String {
    for _ in 0..200 {
        if let Some(a) = logged_addr(p, "OpenAI-compatible HTTP door listening") {
            return a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no HTTP door line; logs:\n{}", p.logs());
}

/// `GET /metrics` of a server, as text.
pub async fn scrape(p: &ServerProc) -> String {
    let url = format!("http://{}/metrics", metrics_addr(p));
    let resp = reqwest::get(&url).await.expect("scrape");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.text().await.expect("body")
}

/// The value of the sample `name` whose labels include every `labels` pair
/// (summed over the series that match), or None when no series matches.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if let Some(v) = rest.strip_prefix(' ') {
            ("", v)
        } else {
            continue;
        };
        if labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        {
            let v: f64 = value
                .split(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            total = Some(total.unwrap_or(0.0) + v);
        }
    }
    total
}
