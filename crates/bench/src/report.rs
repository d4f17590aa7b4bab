//! A run's results: one row per scenario case with the same names and fields on every run
//! and every server, the consistency checks, a human table, JSON, and a before/after diff.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub scenario: String,
    pub case: String,
    /// Operations measured (requests, lists, deliveries …).
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Summary>,
    /// Further figures named by unit: `bytes`, `conflicts`, `rss_kib`, …
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: BTreeMap<String, f64>,
}

impl CaseResult {
    pub fn new(scenario: &str, case: &str, count: u64) -> Self {
        CaseResult {
            scenario: scenario.into(),
            case: case.into(),
            count,
            per_second: None,
            latency_ms: None,
            figures: BTreeMap::new(),
        }
    }
    pub fn rate(mut self, per_second: f64) -> Self {
        self.per_second = Some((per_second * 10.0).round() / 10.0);
        self
    }
    pub fn latency(mut self, s: Summary) -> Self {
        self.latency_ms = Some(s);
        self
    }
    pub fn figure(mut self, name: &str, value: f64) -> Self {
        self.figures.insert(name.into(), value);
        self
    }
}

/// A consistency check a scenario makes; a failed one fails the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub scenario: String,
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub server: String,
    #[serde(default)]
    pub server_version: String,
    pub clients: usize,
    pub count: usize,
    pub cases: Vec<CaseResult>,
    pub checks: Vec<Check>,
    /// CPU seconds (user + system) the tool itself used, to set beside the figures.
    pub bench_cpu_seconds: f64,
    pub wall_seconds: f64,
    pub ok: bool,
}

pub fn case_line(c: &CaseResult) -> String {
    let rate = c
        .per_second
        .map(|r| format!("{r:>9.1}/s"))
        .unwrap_or_else(|| format!("{:>11}", ""));
    let lat = c
        .latency_ms
        .map(|s| {
            format!(
                "{:>8.2} {:>8.2} {:>8.2} {:>9.2}",
                s.min_ms, s.p50_ms, s.p99_ms, s.max_ms
            )
        })
        .unwrap_or_else(|| format!("{:>36}", ""));
    let extra: Vec<String> = c
        .figures
        .iter()
        .map(|(k, v)| {
            if v.fract() == 0.0 {
                format!("{k}={v:.0}")
            } else {
                format!("{k}={v:.2}")
            }
        })
        .collect();
    format!(
        "{:<18} {:<26} {:>8} {rate} {lat}  {}",
        c.scenario,
        c.case,
        c.count,
        extra.join(" ")
    )
}

pub fn header() -> String {
    format!(
        "{:<18} {:<26} {:>8} {:>11} {:>8} {:>8} {:>8} {:>9}  other",
        "SCENARIO", "CASE", "COUNT", "RATE", "MIN ms", "P50 ms", "P99 ms", "MAX ms"
    )
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "capstan bench against {} ({}), clients={} count={}\n",
            self.server, self.server_version, self.clients, self.count
        ));
        out.push_str(&header());
        out.push('\n');
        for c in &self.cases {
            out.push_str(&case_line(c));
            out.push('\n');
        }
        for ch in &self.checks {
            out.push_str(&format!(
                "check {:<8} {:<18} {:<26} {}\n",
                if ch.ok { "ok" } else { "FAILED" },
                ch.scenario,
                ch.name,
                ch.detail
            ));
        }
        out.push_str(&format!(
            "bench's own CPU: {:.2} s over {:.2} s wall ({:.0}% of one core)\n",
            self.bench_cpu_seconds,
            self.wall_seconds,
            100.0 * self.bench_cpu_seconds / self.wall_seconds.max(1e-9)
        ));
        out
    }

    /// Every case present in both runs, as `before -> after` for rate and latency.
    pub fn compare(&self, before: &Report) -> String {
        let mut out = format!(
            "{:<18} {:<26} {:>23} {:>23} {:>23}\n",
            "SCENARIO", "CASE", "RATE/s before→after", "P50 ms before→after", "P99 ms before→after"
        );
        for c in &self.cases {
            let Some(b) = before
                .cases
                .iter()
                .find(|b| b.scenario == c.scenario && b.case == c.case)
            else {
                continue;
            };
            let pair = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (Some(x), Some(y)) => format!("{x:.1}→{y:.1} ({:+.0}%)", pct(x, y)),
                _ => "-".to_string(),
            };
            out.push_str(&format!(
                "{:<18} {:<26} {:>23} {:>23} {:>23}\n",
                c.scenario,
                c.case,
                pair(b.per_second, c.per_second),
                pair(
                    b.latency_ms.map(|s| s.p50_ms),
                    c.latency_ms.map(|s| s.p50_ms)
                ),
                pair(
                    b.latency_ms.map(|s| s.p99_ms),
                    c.latency_ms.map(|s| s.p99_ms)
                ),
            ));
        }
        out
    }
}

fn pct(before: f64, after: f64) -> f64 {
    if before == 0.0 {
        0.0
    } else {
        100.0 * (after - before) / before
    }
}
