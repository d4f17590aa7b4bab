//! The audit policy (audit.k8s.io/v1 `Policy`, from `--audit-policy-file`): ordered rules, the
//! first whose users, groups, verbs, resources, namespaces or URLs match sets the level.

use serde::Deserialize;

/// How much of a request the log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub level: Level,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    #[serde(default)]
    pub omit_managed_fields: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read audit policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("audit policy {path} is not a valid audit.k8s.io Policy: {why}")]
    Parse { path: String, why: String },
}

/// What a request is, as rules see it.
pub struct Request<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub verb: &'a str,
    pub resource_request: bool,
    pub path: &'a str,
    pub api_group: &'a str,
    pub namespace: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub name: &'a str,
}

/// The level and stage choices for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub level: Level,
    pub omit_stages: Vec<Stage>,
    pub omit_managed_fields: bool,
}

impl Policy {
    /// Parse a policy file's text (YAML or JSON).
    pub fn parse(path: &str, text: &str) -> Result<Policy, PolicyError> {
        let bad = |why: String| PolicyError::Parse {
            path: path.to_string(),
            why,
        };
        let p: Policy = crate::limits::parse_config_yaml(text).map_err(bad)?;
        if p.kind != "Policy" || !p.api_version.starts_with("audit.k8s.io/") {
            return Err(bad(format!(
                "apiVersion/kind must be audit.k8s.io/v1 Policy, not {}/{}",
                p.api_version, p.kind
            )));
        }
        Ok(p)
    }

    pub fn load(path: &str) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_string(),
            source,
        })?;
        Policy::parse(path, &text)
    }

    /// The first matching rule's level (None when no rule matches), with the stages the
    /// policy and the rule leave out.
    pub fn decide(&self, r: &Request<'_>) -> Decision {
        let Some(rule) = self.rules.iter().find(|rule| rule.matches(r)) else {
            return Decision {
                level: Level::None,
                omit_stages: Vec::new(),
                omit_managed_fields: false,
            };
        };
        let mut omit_stages = self.omit_stages.clone();
        omit_stages.extend(rule.omit_stages.iter().copied());
        Decision {
            level: rule.level,
            omit_stages,
            omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
        }
    }
}

impl Rule {
    fn matches(&self, r: &Request<'_>) -> bool {
        if !self.users.is_empty() && !self.users.iter().any(|u| u == r.user) {
            return false;
        }
        if !self.user_groups.is_empty() && !r.groups.iter().any(|g| self.user_groups.contains(g)) {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.iter().any(|v| v == r.verb) {
            return false;
        }
        if self.non_resource_urls.is_empty()
            && self.resources.is_empty()
            && self.namespaces.is_empty()
        {
            return true;
        }
        if r.resource_request {
            self.matches_resource(r)
        } else {
            self.matches_non_resource(r)
        }
    }

    fn matches_resource(&self, r: &Request<'_>) -> bool {
        if !self.non_resource_urls.is_empty() {
            return false;
        }
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == r.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = if r.subresource.is_empty() {
            r.resource.to_string()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        self.resources.iter().any(|gr| {
            if gr.group != r.api_group {
                return false;
            }
            if gr.resources.is_empty() {
                return true;
            }
            if !gr.resource_names.is_empty() && !gr.resource_names.iter().any(|n| n == r.name) {
                return false;
            }
            gr.resources.iter().any(|res| {
                res == &combined
                    || res == "*"
                    || res
                        .strip_prefix("*/")
                        .is_some_and(|sub| !r.subresource.is_empty() && sub == r.subresource)
                    || res
                        .strip_suffix("/*")
                        .is_some_and(|base| base == r.resource)
            })
        })
    }

    fn matches_non_resource(&self, r: &Request<'_>) -> bool {
        if !self.resources.is_empty() || !self.namespaces.is_empty() {
            return false;
        }
        self.non_resource_urls
            .iter()
            .any(|u| match u.strip_suffix('*') {
                Some(prefix) => r.path.starts_with(prefix),
                None => u == r.path,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-proxy"]
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps/status"]
  - level: RequestResponse
    namespaces: ["audited"]
    resources:
      - group: ""
        resources: ["configmaps"]
        resourceNames: ["watched"]
  - level: Request
    resources:
      - group: "apps"
  - level: Metadata
    nonResourceURLs: ["/healthz*", "/version"]
    omitStages: ["ResponseStarted"]
"#;

    /// `what`: API group, namespace, resource, subresource, name.
    fn req<'a>(
        user: &'a str,
        groups: &'a [String],
        verb: &'a str,
        what: [&'a str; 5],
    ) -> Request<'a> {
        let [group, ns, resource, sub, name] = what;
        Request {
            user,
            groups,
            verb,
            resource_request: true,
            path: "/api/v1/x",
            api_group: group,
            namespace: ns,
            resource,
            subresource: sub,
            name,
        }
    }

    #[test]
    fn first_matching_rule_sets_the_level() {
        let p = Policy::parse("t", POLICY).unwrap();
        let none: Vec<String> = vec![];
        let nodes = vec!["system:nodes".to_string()];
        let level = |r: &Request<'_>| p.decide(r).level;
        assert_eq!(
            level(&req(
                "system:kube-proxy",
                &none,
                "list",
                ["", "a", "pods", "", ""]
            )),
            Level::None
        );
        assert_eq!(
            level(&req("n", &nodes, "get", ["", "a", "secrets", "", "s"])),
            Level::None
        );
        assert_eq!(
            level(&req("n", &nodes, "list", ["", "a", "secrets", "", ""])),
            Level::Metadata
        );
        assert_eq!(
            level(&req("alice", &none, "create", ["", "a", "secrets", "", ""])),
            Level::Metadata
        );
        // `secrets` does not match a subresource; `configmaps/status` matches only that one.
        assert_eq!(
            level(&req(
                "alice",
                &none,
                "get",
                ["", "a", "configmaps", "status", "c"]
            )),
            Level::Metadata
        );
        assert_eq!(
            level(&req(
                "alice",
                &none,
                "get",
                ["", "audited", "configmaps", "", "watched"]
            )),
            Level::RequestResponse
        );
        assert_eq!(
            level(&req(
                "alice",
                &none,
                "get",
                ["", "audited", "configmaps", "", "other"]
            )),
            Level::None
        );
        assert_eq!(
            level(&req(
                "alice",
                &none,
                "get",
                ["", "other", "configmaps", "", "watched"]
            )),
            Level::None
        );
        assert_eq!(
            level(&req(
                "alice",
                &none,
                "patch",
                ["apps", "x", "deployments", "scale", "d"]
            )),
            Level::Request
        );
    }

    #[test]
    fn non_resource_urls_and_stages() {
        let p = Policy::parse("t", POLICY).unwrap();
        let none: Vec<String> = vec![];
        let mut r = req("alice", &none, "get", ["", "", "", "", ""]);
        r.resource_request = false;
        r.path = "/healthz/ready";
        let d = p.decide(&r);
        assert_eq!(d.level, Level::Metadata);
        assert_eq!(
            d.omit_stages,
            vec![Stage::RequestReceived, Stage::ResponseStarted]
        );
        r.path = "/version";
        assert_eq!(p.decide(&r).level, Level::Metadata);
        r.path = "/versions";
        assert_eq!(p.decide(&r).level, Level::None);
    }

    #[test]
    fn a_file_that_is_not_a_policy_is_refused() {
        assert!(Policy::parse("t", "apiVersion: v1\nkind: ConfigMap\n").is_err());
        assert!(Policy::parse(
            "t",
            "rules: [{level: Loud}]\nkind: Policy\napiVersion: audit.k8s.io/v1\n"
        )
        .is_err());
    }
}
