//! The pod status the kubelet would report for a simulated pod: phase, IPs, container
//! statuses and the five kubelet-owned conditions with upstream's reasons and messages.
//! Deterministic in the pod's state, so an unchanged state renders an unchanged patch.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::node_object::fake_id;
use super::pod_state::{Phase, PodSim, Run, Term};
use super::pod_view::{ContainerView, PodView};
use crate::clock::{rfc3339, Millis};

/// The strategic-merge patch body for `pods/status`. Conditions merge by type, so each one
/// names every field (null clears a stale reason or message); container statuses are atomic.
pub fn render(view: &PodView, sim: &PodSim, host_ip: Ipv4Addr, now: Millis) -> Value {
    let containers: Vec<Value> = view
        .containers
        .iter()
        .map(|c| container_status(view, sim, c, now))
        .collect();
    let init: Vec<Value> = view
        .init_containers
        .iter()
        .map(|c| init_container_status(view, sim, c, now))
        .collect();
    let mut status = json!({
        "phase": sim.phase.as_str(),
        "conditions": conditions(view, sim, now),
        "hostIP": host_ip.to_string(),
        "hostIPs": [{"ip": host_ip.to_string()}],
        "startTime": rfc3339(sim.start_time),
        "containerStatuses": containers,
    });
    if let Some(ip) = sim.ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    json!({"metadata": {"uid": view.uid}, "status": status})
}

fn condition(
    ty: &str,
    ok: bool,
    since: Millis,
    reason: Option<&str>,
    message: Option<String>,
) -> Value {
    json!({
        "type": ty,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": rfc3339(since),
        "reason": reason,
        "message": message,
    })
}

/// Upstream's order: PodReadyToStartContainers, Initialized, Ready, ContainersReady, PodScheduled.
fn conditions(view: &PodView, sim: &PodSim, now: Millis) -> Value {
    let finished = match sim.run {
        Run::Done(t) => Some(t.finished),
        _ => None,
    };
    let terminal_reason = match sim.phase {
        Phase::Succeeded => Some("PodCompleted"),
        Phase::Failed => Some("PodFailed"),
        Phase::Running => None,
    };
    // The sandbox is torn down when the pod finishes.
    let sandbox = condition(
        "PodReadyToStartContainers",
        finished.is_none(),
        finished.unwrap_or(sim.start_time),
        None,
        None,
    );
    let initialized = condition(
        "Initialized",
        true,
        sim.start_time,
        (sim.phase == Phase::Succeeded).then_some("PodCompleted"),
        None,
    );
    let watched: Vec<&ContainerView> = view
        .init_containers
        .iter()
        .filter(|c| c.sidecar)
        .chain(view.containers.iter())
        .collect();
    let unready: Vec<&str> = watched
        .iter()
        .filter(|c| !sim.ready(c.ready_after, now))
        .map(|c| c.name.as_str())
        .collect();
    // When readiness last changed: the moment the last container became ready, or the moment
    // the pod stopped being ready (start, crash or finish).
    let ready_since = watched
        .iter()
        .map(|c| sim.run_started + c.ready_after)
        .max()
        .unwrap_or(sim.run_started);
    let unready_since = finished
        .or(sim.last_term.map(|t| t.finished))
        .unwrap_or(sim.start_time);
    let (containers_ready, ready) = if let Some(reason) = terminal_reason {
        (
            condition("ContainersReady", false, unready_since, Some(reason), None),
            condition("Ready", false, unready_since, Some(reason), None),
        )
    } else if !unready.is_empty() {
        let message = format!("containers with unready status: [{}]", unready.join(" "));
        (
            condition(
                "ContainersReady",
                false,
                unready_since,
                Some("ContainersNotReady"),
                Some(message.clone()),
            ),
            condition(
                "Ready",
                false,
                unready_since,
                Some("ContainersNotReady"),
                Some(message),
            ),
        )
    } else {
        let gates: Vec<String> = view
            .readiness_gates
            .iter()
            .filter_map(|(ty, status)| match status.as_deref() {
                Some("True") => None,
                None => Some(format!(
                    "corresponding condition of pod readiness gate {ty:?} does not exist."
                )),
                Some(s) => Some(format!(
                    "the status of pod readiness gate {ty:?} is not \"True\", but {s}"
                )),
            })
            .collect();
        let containers_ready = condition("ContainersReady", true, ready_since, None, None);
        if gates.is_empty() {
            (
                containers_ready,
                condition("Ready", true, ready_since, None, None),
            )
        } else {
            (
                containers_ready,
                condition(
                    "Ready",
                    false,
                    ready_since,
                    Some("ReadinessGatesNotReady"),
                    Some(gates.join(", ")),
                ),
            )
        }
    };
    let scheduled = condition(
        "PodScheduled",
        true,
        view.scheduled_at.unwrap_or(sim.start_time),
        None,
        None,
    );
    json!([sandbox, initialized, ready, containers_ready, scheduled])
}

fn container_id(view: &PodView, name: &str, run: i32) -> String {
    format!(
        "containerd://{}{}",
        fake_id(&format!("{}/{name}/{run}", view.uid), "c"),
        fake_id(&format!("{}/{name}/{run}", view.uid), "d")
    )
}

fn image_id(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = repo
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(repo, |(r, _)| r);
    format!(
        "{repo}@sha256:{}{}",
        fake_id(image, "i"),
        fake_id(image, "j")
    )
}

fn terminated(view: &PodView, name: &str, t: &Term, run: i32) -> Value {
    json!({"terminated": {
        "exitCode": t.code,
        "reason": if t.code == 0 { "Completed" } else { "Error" },
        "startedAt": rfc3339(t.started),
        "finishedAt": rfc3339(t.finished),
        "containerID": container_id(view, name, run),
    }})
}

fn container_status(view: &PodView, sim: &PodSim, c: &ContainerView, now: Millis) -> Value {
    let run = sim.restart_count;
    let state = match &sim.run {
        Run::Running => json!({"running": {"startedAt": rfc3339(sim.run_started)}}),
        Run::BackOff { delay, .. } => json!({"waiting": {
            "reason": "CrashLoopBackOff",
            "message": format!("back-off {}s restarting failed container={} pod={}_{}({})", delay / 1000, c.name, view.name, view.namespace, view.uid),
        }}),
        Run::Done(t) => terminated(view, &c.name, t, run),
    };
    let last = match &sim.last_term {
        Some(t) => terminated(view, &c.name, t, run - 1),
        None => json!({}),
    };
    let mut s = json!({
        "name": c.name,
        "image": c.image,
        "imageID": image_id(&c.image),
        "started": sim.started(c.started_after, now),
        "ready": sim.ready(c.ready_after, now),
        "restartCount": run,
        "state": state,
        "lastState": last,
    });
    if !matches!(sim.run, Run::BackOff { .. }) {
        s["containerID"] = json!(container_id(view, &c.name, run));
    }
    s
}

/// Init containers complete at once (exit 0); sidecars keep running beside the containers.
fn init_container_status(view: &PodView, sim: &PodSim, c: &ContainerView, now: Millis) -> Value {
    if c.sidecar {
        let state = match &sim.run {
            Run::Done(t) => terminated(view, &c.name, &Term { code: 0, ..*t }, 0),
            _ => json!({"running": {"startedAt": rfc3339(sim.start_time)}}),
        };
        let live = !sim.is_terminal();
        return json!({
            "name": c.name, "image": c.image, "imageID": image_id(&c.image),
            "containerID": container_id(view, &c.name, 0),
            "started": live, "ready": live && now >= sim.start_time + c.ready_after,
            "restartCount": 0, "state": state, "lastState": {},
        });
    }
    let done = Term {
        code: 0,
        started: sim.start_time,
        finished: sim.start_time,
    };
    json!({
        "name": c.name, "image": c.image, "imageID": image_id(&c.image),
        "containerID": container_id(view, &c.name, 0),
        "started": false, "ready": true, "restartCount": 0,
        "state": terminated(view, &c.name, &done, 0), "lastState": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::pod_view::{Exit, RestartPolicy};

    fn view(ready_after: Millis, exit: Option<Exit>) -> PodView {
        PodView {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "u1".into(),
            node: "n".into(),
            restart_policy: RestartPolicy::Never,
            containers: vec![ContainerView {
                name: "app".into(),
                image: "nginx:1.27".into(),
                started_after: 0,
                ready_after,
                sidecar: false,
            }],
            init_containers: vec![],
            exit,
            exit_error: None,
            deletion: None,
            phase: None,
            pod_ip: None,
            start_time: None,
            restart_count: 0,
            scheduled_at: None,
            readiness_gates: vec![],
        }
    }

    fn cond<'a>(s: &'a Value, ty: &str) -> &'a Value {
        s["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == ty)
            .unwrap()
    }

    #[test]
    fn running_unready_then_ready_with_upstream_wording() {
        let v = view(5000, None);
        let ip = Some(Ipv4Addr::new(10, 128, 0, 2));
        let mut sim = PodSim::start(&v, ip, 1_735_689_600_000);
        sim.advance(&v, 1_735_689_601_000);
        let s = render(&v, &sim, Ipv4Addr::new(172, 16, 0, 1), 1_735_689_601_000);
        assert_eq!(s["status"]["phase"], "Running");
        assert_eq!(s["status"]["podIP"], "10.128.0.2");
        assert_eq!(s["status"]["podIPs"], json!([{"ip": "10.128.0.2"}]));
        assert_eq!(s["status"]["hostIP"], "172.16.0.1");
        assert_eq!(cond(&s, "Ready")["status"], "False");
        assert_eq!(cond(&s, "Ready")["reason"], "ContainersNotReady");
        assert_eq!(
            cond(&s, "Ready")["message"],
            "containers with unready status: [app]"
        );
        assert_eq!(
            s["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            s["status"]["containerStatuses"][0]["imageID"]
                .as_str()
                .unwrap()
                .split('@')
                .next(),
            Some("nginx")
        );
        let later = render(&v, &sim, Ipv4Addr::new(172, 16, 0, 1), 1_735_689_605_000);
        assert_eq!(cond(&later, "Ready")["status"], "True");
        assert_eq!(cond(&later, "Ready")["reason"], Value::Null);
        assert_eq!(
            cond(&later, "Ready")["lastTransitionTime"],
            "2025-01-01T00:00:05Z"
        );
        assert_eq!(cond(&later, "ContainersReady")["status"], "True");
        // Rendering again at a later moment gives the same patch: nothing is rewritten.
        assert_eq!(
            later,
            render(&v, &sim, Ipv4Addr::new(172, 16, 0, 1), 1_735_689_700_000)
        );
    }

    #[test]
    fn a_failed_pod_reports_its_exit() {
        let v = view(
            0,
            Some(Exit {
                after: 2000,
                code: 7,
            }),
        );
        let mut sim = PodSim::start(&v, None, 0);
        sim.advance(&v, 2000);
        let s = render(&v, &sim, Ipv4Addr::new(172, 16, 0, 1), 3000);
        assert_eq!(s["status"]["phase"], "Failed");
        let t = &s["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (t["exitCode"].as_i64(), t["reason"].as_str()),
            (Some(7), Some("Error"))
        );
        assert_eq!(cond(&s, "Ready")["reason"], "PodFailed");
        assert_eq!(cond(&s, "PodReadyToStartContainers")["status"], "False");
    }
}
