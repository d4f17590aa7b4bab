//! Which nodes a DaemonSet's pod belongs on (upstream's NodeShouldRunDaemonPod) and the pod
//! it makes for a node: the tolerations upstream adds and a required affinity to the node.

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    Toleration,
};

use capstan_scheduler::plugins::{node_affinity, taints};

use crate::cached_pod::Pod;

/// Upstream's AddOrUpdateDaemonPodTolerations: a daemon pod survives its node being
/// not-ready or unreachable, and ignores pressure and unschedulable taints.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network == Some(true);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let mut add = |key: &str, effect: &str| {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        // Replaces a toleration of the same key and effect (AddOrUpdateTolerationInPodSpec).
        tolerations.retain(|o| !(o.key == t.key && o.effect == t.effect));
        tolerations.push(t);
    };
    add("node.kubernetes.io/not-ready", "NoExecute");
    add("node.kubernetes.io/unreachable", "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if host_network {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
}

/// (should run, should continue running): the node matches the pod's node selector and
/// required affinity, and its NoSchedule+NoExecute taints (to run) or NoExecute taints (to
/// keep running) are tolerated. `spec` already carries the daemon tolerations.
pub fn should_run(spec: &PodSpec, node: &Node) -> (bool, bool) {
    if !node_affinity::matches_required(spec, node) {
        return (false, false);
    }
    let node_taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let untolerated = |effects: &[&str]| {
        node_taints
            .iter()
            .any(|t| effects.contains(&t.effect.as_str()) && !taints::tolerated(tolerations, t))
    };
    (
        !untolerated(&["NoSchedule", "NoExecute"]),
        !untolerated(&["NoExecute"]),
    )
}

/// Upstream's ReplaceDaemonSetPodNodeNameNodeAffinity: the pod's required node affinity
/// becomes the single term `metadata.name In [node]`, so the default scheduler places it.
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

/// The node a daemon pod is for: its `nodeName`, else its pinned affinity (upstream's
/// GetTargetNodeName).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.as_ref()?.iter().find_map(|r| {
            let values = r.values.as_deref()?;
            (r.key == "metadata.name" && r.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn taints_selectors_and_pinning() {
        let mut spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "c", "image": "i"}],
            "nodeSelector": {"disk": "ssd"}
        }))
        .unwrap();
        add_daemon_tolerations(&mut spec);
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 6);
        let plain = node(json!({"metadata": {"name": "a", "labels": {"disk": "ssd"}}}));
        assert_eq!(should_run(&spec, &plain), (true, true));
        let other = node(json!({"metadata": {"name": "b", "labels": {"disk": "hdd"}}}));
        assert_eq!(should_run(&spec, &other), (false, false));
        let tainted = node(json!({"metadata": {"name": "c", "labels": {"disk": "ssd"}},
            "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}}));
        assert_eq!(should_run(&spec, &tainted), (false, true));
        let unreachable = node(json!({"metadata": {"name": "d", "labels": {"disk": "ssd"}},
            "spec": {"unschedulable": true, "taints": [
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}));
        assert_eq!(should_run(&spec, &unreachable), (true, true));
        let evicting = node(json!({"metadata": {"name": "e", "labels": {"disk": "ssd"}},
            "spec": {"taints": [{"key": "k", "effect": "NoExecute"}]}}));
        assert_eq!(should_run(&spec, &evicting), (false, false));

        pin_to_node(&mut spec, "a");
        let pod = crate::pods::as_cached(&crate::pods::NewPod {
            spec: Some(spec),
            ..Default::default()
        });
        assert_eq!(target_node(&pod).as_deref(), Some("a"));
    }
}
