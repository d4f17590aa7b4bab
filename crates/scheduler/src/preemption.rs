//! DefaultPreemption: for a pod no node fits, find the node where evicting the fewest and
//! least important lower-priority pods (sparing PodDisruptionBudgets first) makes room.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::cache::{Cache, PodInfo};
use crate::diagnosis::{self, NO_VICTIMS, PREEMPTION_NOT_HELPFUL};
use crate::framework::{Cycle, Nominated};
use crate::plugins::{Code, Rejection};
use crate::selectors::selector_matches;

/// The chosen node and the pods to evict from it.
#[derive(Debug)]
pub struct Plan {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

/// upstream `PodEligibleToPreemptOthers`; Err is the PostFilter message.
pub fn eligible(cycle: &Cycle<'_>, cache: &Cache) -> Result<(), String> {
    let pod = &cycle.pod.pod;
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err(diagnosis::POLICY_NEVER.to_string());
    }
    // A pod that already preempted waits while its victims terminate.
    if let Some(nn) = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
    {
        if let Some(node) = cache.node(nn) {
            if node
                .pods
                .iter()
                .any(|p| p.terminating && p.priority < cycle.pod.priority)
            {
                return Err(
                    "preemption: not eligible due to a terminating pod on the nominated node."
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// Whether evicting `victim` would take a budget below what it allows; budgets are
/// spent as victims are chosen.
fn violates(
    victim: &PodInfo,
    pdbs: &[Arc<PodDisruptionBudget>],
    allowed: &mut HashMap<usize, i32>,
) -> bool {
    let mut violating = false;
    for (i, pdb) in pdbs.iter().enumerate() {
        if pdb.metadata.namespace.as_deref() != Some(victim.namespace()) {
            continue;
        }
        let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        // An empty selector matches nothing for a PDB (upstream's special case).
        if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        {
            continue;
        }
        if !selector_matches(sel, victim.labels()) {
            continue;
        }
        let left = allowed.entry(i).or_insert_with(|| {
            pdb.status
                .as_ref()
                .map(|s| s.disruptions_allowed)
                .unwrap_or(0)
        });
        *left -= 1;
        if *left < 0 {
            violating = true;
        }
    }
    violating
}

struct Candidate {
    node: String,
    victims: Vec<Arc<PodInfo>>,
    pdb_violations: usize,
}

/// upstream `SelectVictimsOnNode`: remove every lower-priority pod; if the pod then fits,
/// add back as many as possible, most important first, PDB-protected ones before others.
fn victims_on(
    cycle: &Cycle<'_>,
    cache: &Cache,
    name: &str,
    pdbs: &[Arc<PodDisruptionBudget>],
    nominated: Option<&Nominated>,
) -> Option<Candidate> {
    let node = cache.node(name)?;
    let prio = cycle.pod.priority;
    let mut reduced = node.with_pods_where(|p| p.priority >= prio);
    if cycle.filter(&reduced, nominated).is_err() {
        return None;
    }
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < prio)
        .cloned()
        .collect();
    if potential.is_empty() {
        return None;
    }
    // More important first: higher priority, then the one that started earlier.
    potential.sort_by(|a, b| {
        b.priority.cmp(&a.priority).then_with(|| {
            let t = |p: &PodInfo| p.start_time.as_ref().map(|t| t.0);
            t(a).cmp(&t(b))
        })
    });
    let mut allowed = HashMap::new();
    let (violating, fine): (Vec<_>, Vec<_>) = potential
        .into_iter()
        .partition(|p| violates(p, pdbs, &mut allowed));
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (group, is_violating) in [(violating, true), (fine, false)] {
        for p in group {
            reduced.add_pod_for_whatif(p.clone());
            if cycle.filter(&reduced, nominated).is_err() {
                // Needed as a victim: take it back out.
                reduced = reduced.with_pods_where(|q| q.uid != p.uid);
                if is_violating {
                    pdb_violations += 1;
                }
                victims.push(p);
            }
        }
    }
    Some(Candidate {
        node: name.to_string(),
        victims,
        pdb_violations,
    })
}

/// Pick a node and victims, or say (in upstream's words) why preemption cannot help.
pub fn plan(
    cycle: &Cycle<'_>,
    cache: &Cache,
    rejected: &[(&str, Rejection)],
    pdbs: &[Arc<PodDisruptionBudget>],
    nominated: &HashMap<String, Nominated>,
) -> Result<Plan, String> {
    let mut reasons: Vec<&str> = Vec::new();
    let mut candidates = Vec::new();
    for (name, r) in rejected {
        if r.code == Code::Unresolvable {
            reasons.push(PREEMPTION_NOT_HELPFUL);
            continue;
        }
        match victims_on(cycle, cache, name, pdbs, nominated.get(*name)) {
            Some(c) if !c.victims.is_empty() => candidates.push(c),
            _ => reasons.push(NO_VICTIMS),
        }
    }
    if candidates.is_empty() {
        return Err(diagnosis::preemption(
            cache.node_count(),
            reasons.into_iter(),
        ));
    }
    // upstream `pickOneNodeForPreemption`: fewest PDB violations, lowest highest victim
    // priority, lowest priority sum, fewest victims; then the first.
    let key = |c: &Candidate| {
        let highest = c
            .victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN);
        let sum: i64 = c
            .victims
            .iter()
            .map(|v| v.priority as i64 + i32::MAX as i64 + 1)
            .sum();
        (c.pdb_violations, highest, sum, c.victims.len())
    };
    let best = candidates
        .into_iter()
        .min_by_key(key)
        .expect("candidates is not empty");
    Ok(Plan {
        node: best.node,
        victims: best.victims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::find_feasible;
    use crate::plugins::testing::{cache, info};
    use serde_json::json;

    fn p(name: &str, prio: i32, cpu: &str, labels: serde_json::Value) -> Arc<PodInfo> {
        info(
            json!({"metadata": {"name": name, "uid": name, "namespace": "d", "labels": labels},
            "spec": {"priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}),
        )
    }

    fn run(
        c: &Cache,
        pod: Arc<PodInfo>,
        pdbs: &[Arc<PodDisruptionBudget>],
    ) -> Result<Plan, String> {
        let cycle = Cycle::new(pod, c);
        let f = find_feasible(&cycle, c, 0, &HashMap::new());
        assert!(f.feasible.is_empty());
        eligible(&cycle, c)?;
        plan(&cycle, c, &f.rejected, pdbs, &HashMap::new())
    }

    #[test]
    fn fewest_lowest_victims_and_pdbs_respected() {
        let mut c = cache(&[("n1", json!({})), ("n2", json!({}))]);
        // n1: two 2-cpu pods of priority 1; n2: one 4-cpu pod of priority 5.
        c.assume(p("a", 1, "2", json!({"app": "a"})), "n1");
        c.assume(p("b", 1, "2", json!({"app": "b"})), "n1");
        c.assume(p("big", 5, "4", json!({})), "n2");
        // 2 cpu needed: one low pod on n1 beats the priority-5 pod on n2.
        let plan1 = run(&c, p("hi", 10, "2", json!({})), &[]).unwrap();
        assert_eq!(plan1.node, "n1");
        assert_eq!(plan1.victims.len(), 1);
        // A budget with no disruptions allowed protects "a": "b" is chosen.
        let pdb: PodDisruptionBudget =
            serde_json::from_value(json!({"metadata": {"name": "pa", "namespace": "d"},
            "spec": {"selector": {"matchLabels": {"app": "a"}}}, "status": {"disruptionsAllowed": 0,
            "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}))
            .unwrap();
        let plan2 = run(&c, p("hi", 10, "2", json!({})), &[Arc::new(pdb)]).unwrap();
        assert_eq!(plan2.victims[0].name(), "b");
        // Lower priority than everything placed: no victims anywhere.
        let err = run(&c, p("lo", 0, "2", json!({})), &[]).unwrap_err();
        assert_eq!(
            err,
            "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn never_policy_and_unresolvable_nodes() {
        let mut c = cache(&[("n1", json!({}))]);
        c.assume(p("a", 1, "4", json!({})), "n1");
        let never = info(
            json!({"metadata": {"name": "x", "uid": "x", "namespace": "d"}, "spec": {"priority": 10,
            "preemptionPolicy": "Never", "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}),
        );
        assert_eq!(run(&c, never, &[]).unwrap_err(), diagnosis::POLICY_NEVER);
        let huge = p("h", 10, "64", json!({}));
        assert_eq!(
            run(&c, huge, &[]).unwrap_err(),
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }
}
