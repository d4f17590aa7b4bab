//! A namespace's Pod Security policy from its `pod-security.kubernetes.io/*` labels: a level
//! and version for each of enforce, audit and warn, parsed as upstream's PolicyToEvaluate.

use serde_json::{Map, Value};

use super::checks::{self, Finding, PodView};
use crate::status::Cause;

/// The Kubernetes minor version capstan serves: what `latest` means.
pub const LATEST_MINOR: u32 = 33;

const PREFIX: &str = "pod-security.kubernetes.io/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: Level,
    /// None: `latest`.
    pub minor: Option<u32>,
}

impl std::fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        };
        match self.minor {
            None => write!(f, "{level}:latest"),
            Some(m) => write!(f, "{level}:v1.{m}"),
        }
    }
}

const PRIVILEGED: LevelVersion = LevelVersion {
    level: Level::Privileged,
    minor: None,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub audit: LevelVersion,
    pub warn: LevelVersion,
}

impl Policy {
    pub fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn]
            .iter()
            .all(|l| l.level == Level::Privileged)
    }
}

fn parse_level(v: &str) -> Option<Level> {
    match v {
        "privileged" => Some(Level::Privileged),
        "baseline" => Some(Level::Baseline),
        "restricted" => Some(Level::Restricted),
        _ => None,
    }
}

/// `latest` → None; `v1.N` → Some(N); anything else is an error.
fn parse_version(v: &str) -> Result<Option<u32>, ()> {
    if v == "latest" {
        return Ok(None);
    }
    v.strip_prefix("v1.")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or(())
}

/// The policy the labels ask for, and a cause per label that does not parse (a bad enforce
/// level enforces restricted, bad audit and warn levels fail open, as upstream).
pub fn from_labels(labels: Option<&Map<String, Value>>) -> (Policy, Vec<Cause>) {
    let mut p = Policy {
        enforce: PRIVILEGED,
        audit: PRIVILEGED,
        warn: PRIVILEGED,
    };
    let mut causes = Vec::new();
    let Some(labels) = labels else {
        return (p, causes);
    };
    let get = |mode: &str| {
        labels
            .get(&format!("{PREFIX}{mode}"))
            .and_then(Value::as_str)
    };
    let mut bad = |mode: &str, value: &str, why: &str| {
        causes.push(Cause::invalid(
            format!("metadata.labels[{PREFIX}{mode}]"),
            value,
            why,
        ))
    };
    const LEVELS: &str = "must be one of privileged, baseline, restricted";
    const VERSIONS: &str = "must be \"latest\" or \"v1.x\"";
    let mut has_enforce = false;
    let mut has_warn = (false, false);
    for (mode, on_error) in [
        ("enforce", Level::Restricted),
        ("audit", Level::Privileged),
        ("warn", Level::Privileged),
    ] {
        let slot = match mode {
            "enforce" => &mut p.enforce,
            "audit" => &mut p.audit,
            _ => &mut p.warn,
        };
        if let Some(v) = get(mode) {
            match parse_level(v) {
                Some(l) => {
                    slot.level = l;
                    has_enforce |= mode == "enforce";
                }
                None => {
                    slot.level = on_error;
                    bad(mode, v, LEVELS);
                }
            }
            has_warn.0 |= mode == "warn";
        }
        let vmode = format!("{mode}-version");
        if let Some(v) = get(&vmode) {
            match parse_version(v) {
                Ok(m) => slot.minor = m,
                Err(()) => bad(&vmode, v, VERSIONS),
            }
            has_warn.1 |= mode == "warn";
        }
    }
    // Without its own warn label, warn is at least as strict as enforce.
    if !has_warn.0 && has_enforce && p.enforce.level > p.warn.level {
        p.warn.level = p.enforce.level;
        if !has_warn.1 {
            p.warn.minor = p.enforce.minor;
        }
    }
    (p, causes)
}

type Check = fn(&PodView<'_>) -> Option<Finding>;

/// Every failed check of `lv` on the pod, in upstream's order: baseline checks by ID, then
/// restricted ones by ID, a restricted check replacing the baseline check it overrides.
pub fn evaluate(lv: LevelVersion, meta: &Value, spec: &Value) -> Vec<Finding> {
    if lv.level == Level::Privileged {
        return Vec::new();
    }
    let minor = lv.minor.unwrap_or(LATEST_MINOR).min(LATEST_MINOR);
    let restricted = lv.level == Level::Restricted;
    let mut list: Vec<Check> = vec![checks::app_armor];
    if !(restricted && minor >= 22) {
        list.push(checks::capabilities_baseline);
    }
    list.push(checks::host_namespaces);
    if !restricted {
        list.push(checks::host_path_volumes);
    }
    list.extend([
        checks::host_ports as Check,
        checks::privileged,
        checks::proc_mount,
        checks::se_linux_options,
    ]);
    if !(restricted && minor >= 19) {
        list.push(checks::seccomp_baseline);
    }
    list.extend([checks::sysctls as Check, checks::windows_host_process]);
    if restricted {
        list.push(checks::allow_privilege_escalation);
        if minor >= 22 {
            list.push(checks::capabilities_restricted);
        }
        list.extend([
            checks::restricted_volumes as Check,
            checks::run_as_non_root,
            checks::run_as_user,
        ]);
        if minor >= 19 {
            list.push(checks::seccomp_restricted);
        }
    }
    let view = PodView { meta, spec, minor };
    list.iter().filter_map(|c| c(&view)).collect()
}

/// `privileged (container "c" must not set …), seccompProfile (…)`.
pub fn detail(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            if f.detail.is_empty() {
                f.reason.clone()
            } else {
                format!("{} ({})", f.reason, f.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `privileged, seccompProfile` (the per-pod summary when a namespace is labelled).
pub fn reasons(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| f.reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_parse_as_upstream() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/enforce-version": "v1.29"});
        let (p, causes) = from_labels(labels.as_object());
        assert!(causes.is_empty());
        assert_eq!(p.enforce.to_string(), "baseline:v1.29");
        // Warn follows a stricter enforce when not set itself.
        assert_eq!(p.warn.to_string(), "baseline:v1.29");
        assert_eq!(p.audit.to_string(), "privileged:latest");
        let bad = json!({"pod-security.kubernetes.io/enforce": "strict", "pod-security.kubernetes.io/audit-version": "1.2"});
        let (p, causes) = from_labels(bad.as_object());
        assert_eq!(
            p.enforce.level,
            Level::Restricted,
            "a bad enforce level fails closed"
        );
        assert_eq!(causes.len(), 2);
    }

    #[test]
    fn restricted_runs_baseline_checks_first_and_overrides() {
        let lv = LevelVersion {
            level: Level::Restricted,
            minor: None,
        };
        let spec = json!({"hostPID": true, "volumes": [{"name": "h", "hostPath": {"path": "/"}}], "containers": [{"name": "c", "securityContext": {"privileged": true}}]});
        let found = evaluate(lv, &json!({}), &spec);
        let reasons: Vec<&str> = found.iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "host namespaces",
                "privileged",
                "allowPrivilegeEscalation != false",
                "unrestricted capabilities",
                "restricted volume types",
                "runAsNonRoot != true",
                "seccompProfile"
            ]
        );
        let baseline = LevelVersion {
            level: Level::Baseline,
            minor: None,
        };
        let found = evaluate(baseline, &json!({}), &spec);
        assert_eq!(
            detail(&found),
            r#"host namespaces (hostPID=true), hostPath volumes (volume "h"), privileged (container "c" must not set securityContext.privileged=true)"#
        );
    }
}
