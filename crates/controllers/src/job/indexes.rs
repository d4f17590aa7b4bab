//! Completion indexes of Indexed Jobs: the `batch.kubernetes.io/job-completion-index`
//! annotation and the `1,3-5` interval text of `completedIndexes` / `failedIndexes`.

use std::collections::BTreeSet;

use crate::cached_pod::Pod;

pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
pub const FAILURE_COUNT_KEY: &str = "batch.kubernetes.io/job-index-failure-count";
pub const IGNORED_FAILURE_COUNT_KEY: &str = "batch.kubernetes.io/job-index-ignored-failure-count";

/// A pod's completion index, if it carries a valid one below `completions`.
pub fn of(pod: &Pod, completions: i32) -> Option<i32> {
    let ix: i32 = pod
        .metadata
        .annotations
        .as_ref()?
        .get(INDEX_KEY)?
        .parse()
        .ok()?;
    (ix >= 0 && ix < completions).then_some(ix)
}

fn count_annotation(pod: &Pod, key: &str) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How many times this index failed before the pod was made (its annotation).
pub fn failure_count(pod: &Pod) -> i32 {
    count_annotation(pod, FAILURE_COUNT_KEY)
}

/// How many failures of this index the pod failure policy ignored before the pod was made.
pub fn ignored_failure_count(pod: &Pod) -> i32 {
    count_annotation(pod, IGNORED_FAILURE_COUNT_KEY)
}

/// Parse `1,3-5,7` into indexes below `completions` (malformed parts are skipped, as
/// upstream's parser logs and skips them).
pub fn parse(text: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            out.extend((a.max(0)..=b.min(completions - 1)).filter(|i| *i < completions));
        }
    }
    out
}

/// Write indexes as ordered intervals: `1,3-5,7`.
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &i in set {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                parts.push(interval(a, b));
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        parts.push(interval(a, b));
    }
    parts.join(",")
}

/// One run as upstream's orderedIntervals writes it: two neighbours are `a,b`, longer runs
/// `a-b`.
fn interval(a: i32, b: i32) -> String {
    if a == b {
        a.to_string()
    } else if b == a + 1 {
        format!("{a},{b}")
    } else {
        format!("{a}-{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_intervals() {
        let s = parse("0,2-4,7,9-9", 10);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 4, 7, 9]);
        assert_eq!(format(&s), "0,2-4,7,9");
        assert_eq!(format(&parse("0-20", 3)), "0-2");
        assert_eq!(format(&BTreeSet::new()), "");
        // Two neighbours are listed, not a range (upstream's orderedIntervals.String).
        assert_eq!(format(&parse("0-1,3,5-6", 10)), "0,1,3,5,6");
    }
}
