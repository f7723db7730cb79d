//! Other workers' reports: what each last said of its members, kept while
//! its reports keep changing (each carries a sequence number bumped on every
//! publish, so a worker's heartbeat is its report changing — no clocks are
//! compared), merged per member for the request path.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Local;

/// A worker whose report has not changed for this long is gone: its load no
/// longer counts (a killed worker's in-flight disappears within it).
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// A gone worker's report is deleted from the shared hash after this long.
pub const FORGET: Duration = Duration::from_secs(30);

/// One worker's report, as published (JSON, compact): sequence number and,
/// per member, `[in_flight, ttft_us, latency_us, ttft_p90_us]` (0: no data).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub s: u64,
    pub m: HashMap<String, [u64; 4]>,
}

fn us(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| {
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
    })
}

fn dur(us: u64) -> Option<Duration> {
    (us > 0).then(|| Duration::from_micros(us))
}

impl Report {
    /// This worker's report: members with anything to say.
    pub fn of(seq: u64, local: Vec<(String, Local)>) -> Self {
        let m = local
            .into_iter()
            .filter(|(_, l)| l.in_flight > 0 || l.ttft.is_some() || l.latency.is_some())
            .map(|(id, l)| {
                (
                    id,
                    [
                        u64::from(l.in_flight),
                        us(l.ttft),
                        us(l.latency),
                        us(l.ttft_p90),
                    ],
                )
            })
            .collect();
        Self { s: seq, m }
    }
}

/// Other workers' reports merged for one member: in-flight summed, each
/// latency as (sum, reports) of the fresh reports that have it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Remote {
    pub in_flight: u32,
    pub ttft: Option<(Duration, u32)>,
    pub latency: Option<(Duration, u32)>,
    pub ttft_p90: Option<(Duration, u32)>,
}

struct Seen {
    seq: u64,
    changed: Instant,
    report: Report,
}

/// The reports seen, by worker.
#[derive(Default)]
pub struct Peers {
    seen: HashMap<String, Seen>,
}

impl Peers {
    /// Takes the shared hash as read (worker → encoded report), skipping
    /// `me` and anything that does not decode.
    pub fn update(&mut self, me: &str, read: Vec<(String, String)>, now: Instant) {
        let mut present = std::collections::HashSet::new();
        for (worker, raw) in read {
            if worker == me {
                continue;
            }
            let Ok(report) = serde_json::from_str::<Report>(&raw) else {
                continue;
            };
            present.insert(worker.clone());
            match self.seen.get_mut(&worker) {
                Some(s) if s.seq == report.s => {}
                Some(s) => {
                    s.seq = report.s;
                    s.changed = now;
                    s.report = report;
                }
                None => {
                    self.seen.insert(
                        worker,
                        Seen {
                            seq: report.s,
                            changed: now,
                            report,
                        },
                    );
                }
            }
        }
        self.seen.retain(|w, _| present.contains(w));
    }

    /// Workers gone for [`FORGET`]: their fields can be deleted.
    pub fn forgotten(&self, now: Instant) -> Vec<String> {
        self.seen
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.changed) >= FORGET)
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// The fresh reports merged per member.
    pub fn merged(&self, now: Instant) -> HashMap<String, Remote> {
        let mut out: HashMap<String, Remote> = HashMap::new();
        let add = |slot: &mut Option<(Duration, u32)>, v: u64| {
            if let Some(d) = dur(v) {
                let (sum, n) = slot.unwrap_or_default();
                *slot = Some((sum + d, n + 1));
            }
        };
        for s in self
            .seen
            .values()
            .filter(|s| now.saturating_duration_since(s.changed) < HEARTBEAT)
        {
            for (member, [in_flight, ttft, latency, p90]) in &s.report.m {
                let r = out.entry(member.clone()).or_default();
                r.in_flight = r
                    .in_flight
                    .saturating_add(u32::try_from(*in_flight).unwrap_or(u32::MAX));
                add(&mut r.ttft, *ttft);
                add(&mut r.latency, *latency);
                add(&mut r.ttft_p90, *p90);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: u64, in_flight: u64, ttft_ms: u64) -> String {
        serde_json::to_string(&Report {
            s: seq,
            m: HashMap::from([("m1".to_owned(), [in_flight, ttft_ms * 1000, 0, 0])]),
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn another_workers_load_expires_with_its_heartbeat() {
        let mut p = Peers::default();
        let read = |seq| {
            vec![
                ("w2".to_owned(), report(seq, 4, 100)),
                ("w3".to_owned(), report(seq, 1, 300)),
                ("me".to_owned(), report(seq, 50, 1)),
                ("bad".to_owned(), "{not json".to_owned()),
            ]
        };
        p.update("me", read(1), Instant::now());
        let m = p.merged(Instant::now());
        assert_eq!(m["m1"].in_flight, 5, "own report not counted twice");
        assert_eq!(m["m1"].ttft, Some((Duration::from_millis(400), 2)));
        // w3 keeps publishing; w2 was killed (its report stays as it was).
        tokio::time::advance(Duration::from_secs(2)).await;
        p.update(
            "me",
            vec![
                ("w2".to_owned(), report(1, 4, 100)),
                ("w3".to_owned(), report(2, 1, 300)),
            ],
            Instant::now(),
        );
        assert_eq!(p.merged(Instant::now())["m1"].in_flight, 5);
        tokio::time::advance(Duration::from_millis(1000)).await;
        let m = p.merged(Instant::now());
        assert_eq!(m["m1"].in_flight, 1, "w2 expired after the heartbeat");
        assert_eq!(m["m1"].ttft, Some((Duration::from_millis(300), 1)));
        assert!(p.forgotten(Instant::now()).is_empty());
        tokio::time::advance(FORGET).await;
        assert_eq!(p.merged(Instant::now()).get("m1"), None);
        let mut gone = p.forgotten(Instant::now());
        gone.sort();
        assert_eq!(gone, vec!["w2".to_owned(), "w3".to_owned()]);
    }

    #[test]
    fn a_report_lists_members_with_something_to_say() {
        let r = Report::of(
            7,
            vec![
                ("idle".to_owned(), Local::default()),
                (
                    "busy".to_owned(),
                    Local {
                        in_flight: 2,
                        ttft_p90: Some(Duration::from_millis(3)),
                        ..Local::default()
                    },
                ),
            ],
        );
        assert_eq!(r.s, 7);
        assert_eq!(r.m.len(), 1);
        assert_eq!(r.m["busy"], [2, 0, 0, 3000]);
    }
}
