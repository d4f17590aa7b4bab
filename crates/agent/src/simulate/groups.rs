//! Node groups: how many simulated nodes of one shape (capacity, labels, taints), parsed from
//! the compact `--node-group 'NAME:COUNT key=value …'` flag syntax.

use std::collections::BTreeMap;

/// The syntax, as `--help` and the README show it.
pub const SYNTAX: &str = "NAME:COUNT followed by key=value items (space or comma separated): \
cpu=32 memory=256Gi pods=110 ephemeral-storage=100Gi arch=amd64 instance-type=m5.large \
label=KEY=VALUE (repeatable) taint=KEY[=VALUE]:EFFECT (repeatable; NoSchedule, \
PreferNoSchedule or NoExecute). Example: 'gpu:2 cpu=8 label=accelerator=nvidia \
taint=dedicated=gpu:NoSchedule'";

#[derive(Debug, Clone, PartialEq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

/// One shape of node and how many of it. The default group (from `--simulate N`) has an
/// empty name.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeGroup {
    pub name: String,
    pub count: usize,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    pub arch: String,
    pub instance_type: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GroupParseError {
    #[error("node group {0:?}: expected NAME:COUNT first ({SYNTAX})")]
    Head(String),
    #[error("node group {group:?}: {item:?}: {why}")]
    Item {
        group: String,
        item: String,
        why: String,
    },
}

impl NodeGroup {
    /// kwok's default node shape: roomy enough that capacity never limits a test by accident.
    pub fn default_shape(name: &str, count: usize) -> NodeGroup {
        NodeGroup {
            name: name.to_string(),
            count,
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            ephemeral_storage: "100Gi".into(),
            arch: "amd64".into(),
            instance_type: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }

    pub fn parse(spec: &str) -> Result<NodeGroup, GroupParseError> {
        let mut items = spec
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty());
        let head = items.next().unwrap_or("");
        let (name, count) = head
            .split_once(':')
            .ok_or_else(|| GroupParseError::Head(spec.to_string()))?;
        let count: usize = count
            .parse()
            .map_err(|_| GroupParseError::Head(spec.to_string()))?;
        if !is_dns_label(name) {
            return Err(GroupParseError::Item {
                group: name.into(),
                item: head.into(),
                why: "the name must be a DNS label (lower case letters, digits, '-')".into(),
            });
        }
        let mut g = NodeGroup::default_shape(name, count);
        for item in items {
            let bad = |why: &str| GroupParseError::Item {
                group: name.into(),
                item: item.into(),
                why: why.into(),
            };
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| bad("expected key=value"))?;
            if value.is_empty() {
                return Err(bad("empty value"));
            }
            match key {
                "cpu" => g.cpu = value.into(),
                "memory" => g.memory = value.into(),
                "ephemeral-storage" => g.ephemeral_storage = value.into(),
                "pods" => {
                    g.pods = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("pods must be a positive integer"))?
                }
                "arch" => g.arch = value.into(),
                "instance-type" => g.instance_type = Some(value.into()),
                "label" => {
                    let (k, v) = value
                        .split_once('=')
                        .ok_or_else(|| bad("expected label=KEY=VALUE"))?;
                    if k.is_empty() {
                        return Err(bad("empty label key"));
                    }
                    g.labels.insert(k.into(), v.into());
                }
                "taint" => g.taints.push(parse_taint(value).map_err(|why| bad(&why))?),
                _ => return Err(bad("unknown key (cpu, memory, pods, ephemeral-storage, arch, instance-type, label, taint)")),
            }
        }
        Ok(g)
    }
}

/// `KEY[=VALUE]:EFFECT`, as `kubectl taint` writes it.
fn parse_taint(s: &str) -> Result<Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or("expected taint=KEY[=VALUE]:EFFECT")?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!(
            "effect {effect:?} must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err("empty taint key".into());
    }
    Ok(Taint {
        key: key.into(),
        value,
        effect: effect.into(),
    })
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_with_labels_taints_and_capacity() {
        let g = NodeGroup::parse(
            "gpu:2 cpu=8,memory=64Gi pods=30 label=accelerator=nvidia label=topology.kubernetes.io/zone=b taint=dedicated=gpu:NoSchedule taint=spot:PreferNoSchedule instance-type=g4",
        )
        .unwrap();
        assert_eq!((g.name.as_str(), g.count), ("gpu", 2));
        assert_eq!(
            (g.cpu.as_str(), g.memory.as_str(), g.pods),
            ("8", "64Gi", 30)
        );
        assert_eq!(g.labels["accelerator"], "nvidia");
        assert_eq!(g.labels["topology.kubernetes.io/zone"], "b");
        assert_eq!(g.instance_type.as_deref(), Some("g4"));
        assert_eq!(
            g.taints,
            vec![
                Taint {
                    key: "dedicated".into(),
                    value: Some("gpu".into()),
                    effect: "NoSchedule".into()
                },
                Taint {
                    key: "spot".into(),
                    value: None,
                    effect: "PreferNoSchedule".into()
                }
            ]
        );
    }

    #[test]
    fn bad_groups_say_what_is_wrong() {
        assert!(matches!(
            NodeGroup::parse("gpu"),
            Err(GroupParseError::Head(_))
        ));
        assert!(matches!(
            NodeGroup::parse("gpu:x"),
            Err(GroupParseError::Head(_))
        ));
        assert!(NodeGroup::parse("Gpu:1").is_err());
        let e = NodeGroup::parse("gpu:1 taint=a=b:Never").unwrap_err();
        assert!(e.to_string().contains("NoSchedule"), "{e}");
        assert!(NodeGroup::parse("gpu:1 color=blue").is_err());
        assert!(NodeGroup::parse("gpu:1 pods=0").is_err());
        assert!(NodeGroup::parse("gpu:1 label=novalue").is_err());
    }
}
