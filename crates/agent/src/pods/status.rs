//! The pod status the agent observed, rendered as a strategic-merge patch for `pods/status`:
//! phase (upstream's rules), the kubelet's conditions with transition times kept across
//! syncs, and every container's state, last state, restarts, readiness and ids.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::slot::{Kind, Slot, Terminated};
use crate::runtime::ContainerState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Whether a container that exited with `code` runs again under `policy`.
pub fn restarts(policy: &str, kind: Kind, code: i32) -> bool {
    match kind {
        Kind::Sidecar => true,
        Kind::Ephemeral => false,
        // Init containers never restart under Never; otherwise until they succeed.
        Kind::Init => policy != "Never" && code != 0,
        Kind::App => match policy {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        },
    }
}

/// Upstream's getPhase over the app containers (sidecars do not count).
pub fn phase(slots: &[Slot], initialized: bool, init_failed: bool, policy: &str) -> Phase {
    if init_failed {
        return Phase::Failed;
    }
    if !initialized {
        return Phase::Pending;
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in slots.iter().filter(|s| s.kind == Kind::App) {
        if s.running() {
            running += 1;
        } else if let Some(t) = s.exited() {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s.last.is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        Phase::Pending
    } else if running > 0 {
        Phase::Running
    } else if stopped > 0 {
        if policy == "Always" {
            Phase::Running
        } else if stopped == succeeded {
            Phase::Succeeded
        } else if policy == "Never" {
            Phase::Failed
        } else {
            Phase::Running
        }
    } else {
        Phase::Pending
    }
}

/// Remembers when each condition last changed.
#[derive(Debug, Default)]
pub struct Transitions {
    seen: BTreeMap<&'static str, (bool, SystemTime)>,
}

impl Transitions {
    fn at(&mut self, ty: &'static str, ok: bool) -> SystemTime {
        let now = SystemTime::now();
        let entry = self.seen.entry(ty).or_insert((ok, now));
        if entry.0 != ok {
            *entry = (ok, now);
        }
        entry.1
    }
}

fn rfc3339(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{ts:.0}")
}

pub struct View<'a> {
    pub slots: &'a [Slot],
    pub phase: Phase,
    pub sandbox_ready: bool,
    pub initialized: bool,
    pub host_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    pub start_time: SystemTime,
    pub qos: &'a str,
    pub reason: Option<(&'a str, &'a str)>,
}

pub fn render(uid: &str, v: &View<'_>, tr: &mut Transitions) -> Value {
    let terminal = v.phase.terminal();
    let condition = |tr: &mut Transitions,
                     ty: &'static str,
                     ok: bool,
                     reason: Option<&str>,
                     message: Option<String>| {
        json!({
            "type": ty,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": rfc3339(tr.at(ty, ok)),
            "reason": reason,
            "message": message,
        })
    };
    let incomplete: Vec<&str> = v
        .slots
        .iter()
        .filter(|s| s.kind == Kind::Init && s.exited().is_none_or(|t| t.exit_code != 0))
        .map(|s| s.name.as_str())
        .collect();
    let unready: Vec<&str> = v
        .slots
        .iter()
        .filter(|s| matches!(s.kind, Kind::App | Kind::Sidecar) && !s.ready())
        .map(|s| s.name.as_str())
        .collect();
    let terminal_reason = match v.phase {
        Phase::Succeeded => Some("PodCompleted"),
        Phase::Failed => Some("PodFailed"),
        _ => None,
    };
    let mut conditions = vec![condition(
        tr,
        "PodReadyToStartContainers",
        v.sandbox_ready && !terminal,
        None,
        None,
    )];
    conditions.push(if v.initialized {
        condition(
            tr,
            "Initialized",
            true,
            terminal_reason.filter(|r| *r == "PodCompleted"),
            None,
        )
    } else {
        condition(
            tr,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        )
    });
    let (ready, reason, message) = if let Some(r) = terminal_reason {
        (false, Some(r), None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    conditions.push(condition(tr, "Ready", ready, reason, message.clone()));
    conditions.push(condition(tr, "ContainersReady", ready, reason, message));
    let statuses = |kind: &dyn Fn(Kind) -> bool| -> Vec<Value> {
        v.slots
            .iter()
            .filter(|s| kind(s.kind))
            .map(container_status)
            .collect()
    };
    let mut status = json!({
        "phase": v.phase.as_str(),
        "conditions": conditions,
        "hostIP": v.host_ip,
        "hostIPs": [{"ip": v.host_ip}],
        "startTime": rfc3339(v.start_time),
        "qosClass": v.qos,
        "containerStatuses": statuses(&|k| k == Kind::App),
    });
    let init = statuses(&|k| matches!(k, Kind::Init | Kind::Sidecar));
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    let ephemeral = statuses(&|k| k == Kind::Ephemeral);
    if !ephemeral.is_empty() {
        status["ephemeralContainerStatuses"] = json!(ephemeral);
    }
    if let Some(ip) = v.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some((reason, message)) = v.reason {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    json!({"metadata": {"uid": uid}, "status": status})
}

fn terminated(t: &Terminated) -> Value {
    json!({"terminated": {
        "exitCode": t.exit_code,
        "reason": t.reason,
        "message": (!t.message.is_empty()).then_some(&t.message),
        "startedAt": t.started_at.map(rfc3339),
        "finishedAt": rfc3339(t.finished_at),
        "containerID": t.container_id,
    }})
}

fn container_status(s: &Slot) -> Value {
    let state = match (&s.state, s.exited(), &s.waiting) {
        (_, _, Some((reason, message))) if !s.running() => json!({"waiting": {
            "reason": reason,
            "message": (!message.is_empty()).then_some(message),
        }}),
        (Some(ContainerState::Running { started_at, .. }), _, _) => {
            json!({"running": {"startedAt": rfc3339(*started_at)}})
        }
        (_, Some(t), _) => terminated(t),
        _ => json!({"waiting": {"reason": "ContainerCreating"}}),
    };
    // A container waiting to restart shows its last run as lastState.
    let last = match (&s.waiting, s.exited()) {
        (Some(_), Some(t)) if !s.running() => terminated(t),
        _ => s.last.as_ref().map_or(json!({}), terminated),
    };
    let ready = match s.kind {
        Kind::Init => s.exited().is_some_and(|t| t.exit_code == 0),
        _ => s.ready(),
    };
    let mut v = json!({
        "name": s.name,
        "state": state,
        "lastState": last,
        "ready": ready,
        "restartCount": s.restarts,
        "image": s.image,
        "imageID": s.image_id,
        "started": s.started(),
    });
    if let Some((_, id)) = &s.run {
        v["containerID"] = json!(format!("capstan://{id}"));
    }
    v
}
