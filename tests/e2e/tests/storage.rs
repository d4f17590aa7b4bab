//! Persistent volumes end to end: the default `local-path` StorageClass, claims bound on
//! first consumer and provisioned by the node's agent, data outliving pods (and StatefulSet
//! pods), reclaim Delete and Retain, and a static hostPath volume bound at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_e2e::{apply, get_json, node_ready, wait_for, Server};
use serde_json::Value;

fn phase_of(s: &Server, what: &[&str]) -> String {
    get_json(s, what)
        .and_then(|v| v["status"]["phase"].as_str().map(String::from))
        .unwrap_or_default()
}

fn wait_phase(s: &Server, what: &[&str], phase: &str, within: Duration) -> Value {
    wait_for(&format!("{what:?} to be {phase}"), within, || {
        let v = get_json(s, what)?;
        (v["status"]["phase"] == phase).then_some(v)
    })
}

fn wait_gone(s: &Server, what: &[&str]) {
    wait_for(
        &format!("{what:?} to be gone"),
        Duration::from_secs(60),
        || {
            let mut args = vec!["get"];
            args.extend_from_slice(what);
            args.extend_from_slice(&["--ignore-not-found", "-o", "name"]);
            s.kubectl_ok(&args).trim().is_empty().then_some(())
        },
    );
}

/// A busybox pod running `script` with the claim mounted at /data.
fn pod_with_claim(name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", {script:?}]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#
    )
}

fn run_to_completion(s: &Server, name: &str, claim: &str, script: &str) -> String {
    apply(s, &pod_with_claim(name, claim, script));
    wait_phase(s, &["pod", name], "Succeeded", Duration::from_secs(90));
    let logs = s.kubectl_ok(&["logs", name]);
    s.kubectl_ok(&["delete", "pod", name, "--wait=true"]);
    logs
}

fn events_for(s: &Server, name: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ])
}

fn storage_root(s: &Server) -> PathBuf {
    s.data_dir.join("agent").join("storage")
}

#[test]
fn a_claim_without_class_is_provisioned_for_its_first_pod_and_outlives_it() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    let classes = s.kubectl_ok(&["get", "storageclass"]);
    let row = classes
        .lines()
        .find(|l| l.starts_with("local-path (default)"))
        .unwrap_or_else(|| panic!("no default local-path class:\n{classes}"));
    for cell in ["rancher.io/local-path", "Delete", "WaitForFirstConsumer"] {
        assert!(row.contains(cell), "{row}");
    }

    apply(
        &s,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 64Mi}}}\n",
    );
    let claim = get_json(&s, &["pvc", "data"]).expect("the claim");
    assert_eq!(claim["spec"]["storageClassName"], "local-path", "{claim}");
    // No consumer yet: the binder says so and the claim stays Pending.
    wait_for(
        "the WaitForFirstConsumer event",
        Duration::from_secs(30),
        || {
            events_for(&s, "data")
                .contains("WaitForFirstConsumer")
                .then_some(())
        },
    );
    assert_eq!(phase_of(&s, &["pvc", "data"]), "Pending");
    assert!(s.kubectl_ok(&["get", "pv", "-o", "name"]).trim().is_empty());

    let logs = run_to_completion(
        &s,
        "writer",
        "data",
        "echo kept-across-pods > /data/file && echo wrote",
    );
    assert_eq!(logs, "wrote\n");
    let claim = wait_phase(&s, &["pvc", "data"], "Bound", Duration::from_secs(10));
    let uid = claim["metadata"]["uid"].as_str().expect("uid").to_string();
    let volume = format!("pvc-{uid}");
    assert_eq!(claim["spec"]["volumeName"], volume.as_str(), "{claim}");
    assert_eq!(claim["status"]["capacity"]["storage"], "64Mi", "{claim}");
    let node = s.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        node.as_str()
    );
    let table = s.kubectl_ok(&["get", "pv"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&volume))
        .unwrap_or_else(|| panic!("no provisioned volume:\n{table}"));
    for cell in [
        "64Mi",
        "RWO",
        "Delete",
        "Bound",
        "default/data",
        "local-path",
    ] {
        assert!(row.contains(cell), "{row}");
    }
    let pv = get_json(&s, &["pv", &volume]).expect("the volume");
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "rancher.io/local-path"
    );
    let dir = storage_root(&s).join(format!("pvc-{uid}_default_data"));
    assert_eq!(
        pv["spec"]["hostPath"]["path"],
        dir.to_str().unwrap(),
        "{pv}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("file")).expect("the file on the node"),
        "kept-across-pods\n"
    );
    assert!(events_for(&s, "data").contains("ProvisioningSucceeded"));
    // Protected while they exist: neither goes while in use or bound.
    assert_eq!(
        claim["metadata"]["finalizers"][0], "kubernetes.io/pvc-protection",
        "{claim}"
    );
    assert_eq!(
        pv["metadata"]["finalizers"][0], "kubernetes.io/pv-protection",
        "{pv}"
    );

    // A new pod reads what the first wrote.
    let logs = run_to_completion(&s, "reader", "data", "cat /data/file");
    assert_eq!(logs, "kept-across-pods\n");

    // Deleting the claim releases the volume; its policy (Delete) removes it and its data.
    s.kubectl_ok(&["delete", "pvc", "data"]);
    wait_gone(&s, &["pv", &volume]);
    wait_for(
        "the volume directory to go",
        Duration::from_secs(10),
        || (!dir.exists()).then_some(()),
    );
}

#[test]
fn a_pod_waits_in_container_creating_until_its_claim_is_bound() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    // A class with no provisioner: the claim stays unbound until a volume is made by hand.
    apply(
        &s,
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: manual}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: later}\nspec: {storageClassName: manual, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Mi}}}\n",
    );
    apply(&s, &pod_with_claim("patient", "later", "cat /data/seed"));
    wait_for("a FailedMount event", Duration::from_secs(60), || {
        events_for(&s, "patient")
            .contains("FailedMount")
            .then_some(())
    });
    let pod = get_json(&s, &["pod", "patient"]).expect("pod");
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating",
        "{pod}"
    );
    // The administrator makes a volume on this node: the claim binds, the pod starts.
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("seed"), "made-by-hand\n").expect("seed");
    let node = s.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    apply(
        &s,
        &format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: by-hand}}\nspec: {{storageClassName: manual, capacity: {{storage: 1Mi}}, accessModes: [ReadWriteOnce], local: {{path: {:?}}}, nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{node}]}}]}}]}}}}}}\n",
            host.path().to_str().unwrap()
        ),
    );
    wait_phase(&s, &["pvc", "later"], "Bound", Duration::from_secs(30));
    wait_phase(
        &s,
        &["pod", "patient"],
        "Succeeded",
        Duration::from_secs(60),
    );
    assert_eq!(s.kubectl_ok(&["logs", "patient"]), "made-by-hand\n");
    s.kubectl_ok(&["delete", "pod", "patient"]);
}

#[test]
fn a_static_host_path_volume_binds_at_once_and_is_retained() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("seed"), "static-data\n").expect("seed");
    let path = host.path().to_str().unwrap();
    apply(
        &s,
        &format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: static-pv, labels: {{kind: static}}}}\nspec: {{capacity: {{storage: 1Gi}}, accessModes: [ReadWriteOnce], hostPath: {{path: {path:?}}}}}\n---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: too-big}}\nspec: {{capacity: {{storage: 5Gi}}, accessModes: [ReadWriteOnce], hostPath: {{path: /nonexistent-capstan}}}}\n"
        ),
    );
    wait_phase(
        &s,
        &["pv", "static-pv"],
        "Available",
        Duration::from_secs(20),
    );
    apply(
        &s,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: static}\nspec: {storageClassName: \"\", accessModes: [ReadWriteOnce], resources: {requests: {storage: 100Mi}}}\n",
    );
    // Class "": Immediate binding to the smallest class-less volume that fits, no pod needed.
    let claim = wait_phase(&s, &["pvc", "static"], "Bound", Duration::from_secs(20));
    assert_eq!(claim["spec"]["volumeName"], "static-pv", "{claim}");
    assert_eq!(claim["status"]["capacity"]["storage"], "1Gi", "{claim}");
    assert_eq!(
        claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    let pv = wait_phase(&s, &["pv", "static-pv"], "Bound", Duration::from_secs(10));
    assert_eq!(pv["spec"]["claimRef"]["name"], "static", "{pv}");
    assert_eq!(
        pv["spec"]["claimRef"]["uid"], claim["metadata"]["uid"],
        "{pv}"
    );
    assert_eq!(phase_of(&s, &["pv", "too-big"]), "Available");

    let logs = run_to_completion(
        &s,
        "sees",
        "static",
        "cat /data/seed; echo more > /data/added",
    );
    assert_eq!(logs, "static-data\n");
    assert!(Path::new(path).join("added").exists());

    // Retain: the volume outlives its claim, Released, with its data.
    s.kubectl_ok(&["delete", "pvc", "static"]);
    wait_phase(
        &s,
        &["pv", "static-pv"],
        "Released",
        Duration::from_secs(30),
    );
    let table = s.kubectl_ok(&["get", "pv", "static-pv"]);
    assert!(
        table.contains("Released") && table.contains("Retain"),
        "{table}"
    );
    assert!(Path::new(path).join("seed").exists());
    s.kubectl_ok(&["delete", "pv", "static-pv", "too-big"]);
}

const STATEFULSET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: ["sh", "-c", "trap 'exit 0' TERM; [ -f /data/first ] || cat /proc/sys/kernel/random/uuid > /data/first; echo \"$(hostname) $(cat /data/first)\"; sleep 3600 & wait"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
"#;

fn running_log(s: &Server, pod: &str, old_uid: Option<&str>) -> String {
    wait_for(
        &format!("{pod} to run and print"),
        Duration::from_secs(90),
        || {
            let p = get_json(s, &["pod", pod])?;
            if p["status"]["phase"] != "Running"
                || old_uid.is_some_and(|u| p["metadata"]["uid"] == u)
            {
                return None;
            }
            let out = s.kubectl(&["logs", pod]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (out.status.success() && !text.trim().is_empty()).then_some(text)
        },
    )
}

#[test]
fn statefulset_pods_keep_their_own_volumes_when_recreated() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    apply(&s, STATEFULSET);
    for i in 0..2 {
        wait_phase(
            &s,
            &["pvc", &format!("data-db-{i}")],
            "Bound",
            Duration::from_secs(90),
        );
    }
    let first0 = running_log(&s, "db-0", None);
    let first1 = running_log(&s, "db-1", None);
    assert!(first0.starts_with("db-0 "), "{first0}");
    assert_ne!(first0.split(' ').nth(1), first1.split(' ').nth(1));
    let uid = get_json(&s, &["pod", "db-0"]).expect("db-0")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    s.kubectl_ok(&["delete", "pod", "db-0"]);
    // The recreated pod mounts the same claim and reads what the old one wrote.
    let again = running_log(&s, "db-0", Some(&uid));
    assert_eq!(again, first0);

    s.kubectl_ok(&["delete", "statefulset", "db"]);
    wait_gone(&s, &["pod", "db-0", "db-1"]);
    let volumes: Vec<String> = (0..2)
        .map(|i| {
            get_json(&s, &["pvc", &format!("data-db-{i}")]).expect("claim")["spec"]["volumeName"]
                .as_str()
                .expect("volume")
                .to_string()
        })
        .collect();
    s.kubectl_ok(&["delete", "pvc", "data-db-0", "data-db-1"]);
    for v in &volumes {
        wait_gone(&s, &["pv", v]);
    }
    let left: Vec<_> = std::fs::read_dir(storage_root(&s))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "volume directories left: {left:?}");
}
