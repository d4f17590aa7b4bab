//! The ClusterRole aggregation controller (upstream's clusterrole-aggregation): a ClusterRole
//! with an `aggregationRule` gets the rules of every ClusterRole its selectors match.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::context::Context;

const MANAGER: &str = "clusterrole-aggregation-controller";

/// Whether `labels` satisfy `selector` (the controllers' one LabelSelector matcher); an
/// empty selector matches nothing, as upstream's aggregation treats it.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    !empty && capstan_scheduler::selectors::selector_matches(selector, labels)
}

/// The rules `role` aggregates from `all`: matching roles in name order, each rule once,
/// itself excluded. None when it has no aggregation rule.
pub fn aggregated_rules(role: &ClusterRole, all: &[ClusterRole]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .as_ref()?;
    let mut sources: Vec<&ClusterRole> = all
        .iter()
        .filter(|r| r.name_any() != role.name_any())
        .filter(|r| selectors.iter().any(|s| selects(s, r.labels())))
        .collect();
    sources.sort_by_key(|r| r.name_any());
    let mut rules: Vec<PolicyRule> = Vec::new();
    for r in sources {
        for rule in r.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

/// One pass: every aggregated ClusterRole whose rules differ is patched.
async fn sync(api: &Api<ClusterRole>) -> Result<(), kube::Error> {
    let all = api.list(&ListParams::default()).await?.items;
    for role in &all {
        let Some(rules) = aggregated_rules(role, &all) else {
            continue;
        };
        if role.rules.as_deref().unwrap_or_default() == rules.as_slice() {
            continue;
        }
        let patch = serde_json::json!({"rules": rules});
        api.patch(
            &role.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        tracing::info!(clusterrole = %role.name_any(), rules = rules.len(), "aggregated rules updated");
    }
    Ok(())
}

pub async fn run(ctx: Arc<Context>) {
    let api: Api<ClusterRole> = Api::all(ctx.client.clone());
    let mut events = capstan_slim::watcher(api.clone(), watcher::Config::default()).boxed();
    let mut delay = Duration::from_millis(200);
    loop {
        // Every change can affect any aggregated role: recompute them all (they are few).
        match events.next().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "clusterrole watch error");
                continue;
            }
            None => return,
        }
        // Let a burst of changes (an initial list) settle into one pass.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await
        {
        }
        match sync(&api).await {
            Ok(()) => delay = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(controller = MANAGER, error = %e, "aggregation failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
                if let Err(e) = sync(&api).await {
                    tracing::debug!(error = %e, "aggregation retry failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn role(name: &str, labels: &[(&str, &str)], verbs: &[&str]) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            rules: Some(vec![PolicyRule {
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
                api_groups: Some(vec!["".into()]),
                resources: Some(vec!["pods".into()]),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn aggregates_matching_roles_once_in_name_order() {
        let mut agg = role("agg", &[], &[]);
        agg.rules = None;
        agg.aggregation_rule = Some(k8s_openapi::api::rbac::v1::AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([("x".to_string(), "true".to_string())])),
                ..Default::default()
            }]),
        });
        let all = vec![
            agg.clone(),
            role("b", &[("x", "true")], &["list"]),
            role("a", &[("x", "true")], &["get"]),
            role("dup", &[("x", "true")], &["get"]),
            role("other", &[("y", "true")], &["delete"]),
        ];
        let rules = aggregated_rules(&agg, &all).unwrap();
        let verbs: Vec<&str> = rules.iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, ["get", "list"]);
        assert!(aggregated_rules(&all[1], &all).is_none());
        assert!(!selects(&LabelSelector::default(), &BTreeMap::new()));
    }
}
