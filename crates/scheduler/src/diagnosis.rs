//! upstream's FitError message: "0/N nodes are available: <count reason, ...>." plus the
//! pre-filter reason or the preemption outcome, exactly as kube-scheduler words it.

use std::collections::BTreeMap;

/// `count reason` strings sorted as strings (upstream `sortReasonsHistogram`).
fn histogram<'a>(reasons: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut lines: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    lines.sort();
    lines.join(", ")
}

/// The message for a pod no node could take. `reasons` holds every reason of every refused
/// node (a node refused for cpu and memory counts in both).
pub fn fit_error<'a>(
    all_nodes: usize,
    prefilter: Option<&str>,
    reasons: impl Iterator<Item = &'a str>,
    postfilter: Option<&str>,
) -> String {
    let mut msg = format!("0/{all_nodes} nodes are available:");
    match prefilter {
        Some(p) => msg.push_str(&format!(" {p}.")),
        None => msg.push_str(&format!(" {}.", histogram(reasons))),
    }
    if let Some(p) = postfilter {
        msg.push_str(&format!(" {p}"));
    }
    msg
}

/// The preemption part: "preemption: 0/N nodes are available: <histogram>."
pub fn preemption<'a>(all_nodes: usize, reasons: impl Iterator<Item = &'a str>) -> String {
    format!(
        "preemption: 0/{all_nodes} nodes are available: {}.",
        histogram(reasons)
    )
}

/// upstream `ErrNoNodesAvailable`.
pub const NO_NODES: &str = "no nodes available to schedule pods";
pub const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const POLICY_NEVER: &str = "preemption: not eligible due to preemptionPolicy=Never.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_shape() {
        let reasons = [
            "node(s) had untolerated taint {dedicated: gpu}",
            "Insufficient cpu",
            "node(s) had untolerated taint {dedicated: gpu}",
        ];
        let post = preemption(3, [PREEMPTION_NOT_HELPFUL; 3].into_iter());
        assert_eq!(
            fit_error(3, None, reasons.into_iter(), Some(&post)),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        assert_eq!(
            fit_error(
                2,
                Some("persistentvolumeclaim \"data\" not found"),
                std::iter::empty(),
                None
            ),
            "0/2 nodes are available: persistentvolumeclaim \"data\" not found."
        );
        assert_eq!(
            preemption(3, [NO_VICTIMS, PREEMPTION_NOT_HELPFUL, NO_VICTIMS].into_iter()),
            "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
    }
}
