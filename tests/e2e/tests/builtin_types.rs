//! The built-in workload, networking, RBAC and storage types with the real kubectl:
//! `kubectl create` generators (protobuf bodies), upstream defaults on what `apply` stores,
//! strategic merge by merge keys, `scale`, `get all`, and Service address/port allocation.

use std::collections::HashSet;

use capstan_e2e::{text, Server};

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80, name: http}]
        resources: {limits: {cpu: 500m, memory: 128Mi}}
        readinessProbe: {httpGet: {path: /healthz, port: http}}
      - name: logger
        image: busybox
        args: [sh, -c, "tail -f /var/log/app.log"]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: pg, image: "postgres:16", volumeMounts: [{name: data, mountPath: /var/lib/postgresql}]}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: "agent:2"}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: "migrate:1"}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: report, image: "report:1"}]
---
apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  containers: [{name: c, image: "busybox:1.36", command: [sleep, "3600"]}]
  volumes: [{name: scratch}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec:
  podSelector: {}
  egress: [{ports: [{port: 53}]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: readers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: User, name: alice}, {kind: ServiceAccount, name: default, namespace: default}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local}
provisioner: kubernetes.io/no-provisioner
"#;

fn jp(s: &Server, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let p = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &p]);
    s.kubectl_ok(&args)
}

#[test]
fn applied_workloads_get_upstream_defaults_and_merge_by_key() {
    let s = Server::start();
    let out = s.kubectl_stdin(&["apply", "-f", "-"], WORKLOADS);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert_eq!(
        o.lines().filter(|l| l.ends_with(" created")).count(),
        10,
        "{o}"
    );

    // Deployment and its pod template.
    assert_eq!(jp(&s, &["deploy", "web"], "{.spec.replicas} {.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge} {.spec.strategy.rollingUpdate.maxUnavailable} {.spec.revisionHistoryLimit} {.spec.progressDeadlineSeconds} {.metadata.generation}"), "1 RollingUpdate 25% 25% 10 600 1");
    let t = "{.spec.template.spec";
    assert_eq!(jp(&s, &["deploy", "web"], &format!("{t}.restartPolicy}} {t}.dnsPolicy}} {t}.terminationGracePeriodSeconds}} {t}.schedulerName}}")), "Always ClusterFirst 30 default-scheduler");
    let c = &format!("{t}.containers[0]");
    assert_eq!(jp(&s, &["deploy", "web"], &format!("{c}.imagePullPolicy}} {c}.terminationMessagePath}} {c}.terminationMessagePolicy}} {c}.ports[0].protocol}} {c}.resources.requests.cpu}} {c}.readinessProbe.periodSeconds}} {c}.readinessProbe.httpGet.scheme}}")),
        "IfNotPresent /dev/termination-log File TCP 500m 10 HTTP");
    assert_eq!(
        jp(
            &s,
            &["deploy", "web"],
            &format!("{t}.containers[1].imagePullPolicy}}")
        ),
        "Always",
        "no tag means :latest"
    );
    // Service: type, affinity, targetPort = port, an address from the service range.
    assert_eq!(jp(&s, &["svc", "web"], "{.spec.type} {.spec.sessionAffinity} {.spec.ports[0].protocol} {.spec.ports[0].targetPort} {.spec.ipFamilyPolicy}"), "ClusterIP None TCP 80 SingleStack");
    let ip = jp(&s, &["svc", "web"], "{.spec.clusterIP}");
    assert!(
        ip.starts_with("10.9") || ip.starts_with("10.10") || ip.starts_with("10.11"),
        "{ip}"
    );
    // StatefulSet, DaemonSet, Job, CronJob, Pod, NetworkPolicy, RoleBinding, StorageClass.
    assert_eq!(jp(&s, &["sts", "db"], "{.spec.replicas} {.spec.podManagementPolicy} {.spec.updateStrategy.type} {.spec.updateStrategy.rollingUpdate.partition} {.spec.volumeClaimTemplates[0].spec.volumeMode}"), "1 OrderedReady RollingUpdate 0 Filesystem");
    assert_eq!(jp(&s, &["ds", "agent"], "{.spec.updateStrategy.rollingUpdate.maxUnavailable} {.spec.updateStrategy.rollingUpdate.maxSurge} {.spec.revisionHistoryLimit}"), "1 0 10");
    assert_eq!(jp(&s, &["job", "migrate"], "{.spec.completions} {.spec.parallelism} {.spec.backoffLimit} {.spec.completionMode} {.spec.template.metadata.labels.job-name}"), "1 1 6 NonIndexed migrate");
    let uid = jp(&s, &["job", "migrate"], "{.metadata.uid}");
    assert_eq!(
        jp(
            &s,
            &["job", "migrate"],
            "{.spec.selector.matchLabels.batch\\.kubernetes\\.io/controller-uid}"
        ),
        uid
    );
    assert_eq!(jp(&s, &["cj", "nightly"], "{.spec.concurrencyPolicy} {.spec.suspend} {.spec.successfulJobsHistoryLimit} {.spec.failedJobsHistoryLimit}"), "Allow false 3 1");
    assert_eq!(jp(&s, &["pod", "solo"], "{.spec.serviceAccountName} {.spec.priority} {.status.phase} {.status.qosClass} {.spec.volumes[0].emptyDir} {.spec.tolerations[0].key}"), "default 0 Pending BestEffort {} node.kubernetes.io/not-ready");
    assert_eq!(
        jp(
            &s,
            &["netpol", "deny"],
            "{.spec.policyTypes} {.spec.egress[0].ports[0].protocol}"
        ),
        "[\"Ingress\",\"Egress\"] TCP"
    );
    assert_eq!(
        jp(
            &s,
            &["rolebinding", "readers"],
            "{.subjects[0].apiGroup} {.subjects[1].apiGroup}"
        ),
        "rbac.authorization.k8s.io "
    );
    assert_eq!(
        jp(
            &s,
            &["sc", "local"],
            "{.reclaimPolicy} {.volumeBindingMode}"
        ),
        "Delete Immediate"
    );

    // Re-applying the same file: kubectl sees the merge keys in OpenAPI, so lists merged by
    // key compute no patch. (Atomic lists whose items the server defaulted — StatefulSet
    // volumeClaimTemplates, NetworkPolicy rules, RoleBinding subjects — report
    // `configured`, as against kube-apiserver, and stay as they are.)
    let out = s.kubectl_stdin(&["apply", "-f", "-"], WORKLOADS);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    for kind in [
        "deployment.apps/web",
        "service/web",
        "daemonset.apps/agent",
        "job.batch/migrate",
        "cronjob.batch/nightly",
        "storageclass.storage.k8s.io/local",
    ] {
        assert!(o.contains(&format!("{kind} unchanged")), "{kind} in:\n{o}");
    }
    assert_eq!(
        jp(&s, &["pod", "solo"], "{.spec.volumes[0].emptyDir}"),
        "{}"
    );
    assert_eq!(jp(&s, &["sts", "db"], "{.metadata.generation}"), "1");
    // A changed image is a strategic merge: the other container, ports and defaults stay.
    let changed = WORKLOADS.replacen("image: nginx:1.25", "image: nginx:1.26", 1);
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &changed);
    let (o, e) = text(&out);
    assert!(o.contains("deployment.apps/web configured"), "{o}{e}");
    assert_eq!(jp(&s, &["deploy", "web"], &format!("{t}.containers[*].name}} {t}.containers[0].image}} {t}.containers[0].ports[0].containerPort}} {{.metadata.generation}}")), "nginx logger nginx:1.26 80 2");
    // A strategic patch adding a container by name.
    s.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"envoy:1"}]}}}}"#,
    ]);
    assert_eq!(
        jp(&s, &["deploy", "web"], &format!("{t}.containers[*].name}}")),
        "nginx logger sidecar"
    );

    // scale through the scale subresource, and the tables kubectl prints.
    assert!(s
        .kubectl_ok(&["scale", "deployment/web", "--replicas=3"])
        .contains("scaled"));
    let table = s.kubectl_ok(&["get", "deploy", "web", "-o", "wide"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        table.contains("0/3")
            && table.contains("nginx:1.26,busybox,envoy:1")
            && table.contains("app=web"),
        "{table}"
    );
    let all = s.kubectl_ok(&["get", "all"]);
    for want in [
        "pod/solo",
        "service/web",
        "service/kubernetes",
        "deployment.apps/web",
        "statefulset.apps/db",
        "daemonset.apps/agent",
        "job.batch/migrate",
        "cronjob.batch/nightly",
    ] {
        assert!(all.contains(want), "missing {want} in:\n{all}");
    }
    let pods = s.kubectl_ok(&["get", "pods"]);
    assert_eq!(
        pods.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert!(
        pods.lines()
            .any(|l| l.starts_with("solo") && l.contains("0/1") && l.contains("Pending")),
        "{pods}"
    );
    let svc = s.kubectl_ok(&["get", "svc", "web"]);
    assert!(
        svc.lines().next().unwrap().contains("CLUSTER-IP") && svc.contains("80/TCP"),
        "{svc}"
    );
    // Logs come from the pod's node; this one has none (the server runs no node agent).
    let out = s.kubectl(&["logs", "solo"]);
    let (_, e) = text(&out);
    assert!(
        !out.status.success() && e.contains("pod solo does not have a host assigned"),
        "{e}"
    );
    // explain reads the built-in OpenAPI.
    assert!(s
        .kubectl_ok(&["explain", "deployment.spec.strategy"])
        .contains("rollingUpdate"));
}

#[test]
fn kubectl_create_generators_send_protobuf_for_every_type() {
    let s = Server::start();
    for args in [
        vec![
            "create",
            "deployment",
            "d",
            "--image=nginx:1.25",
            "--replicas=0",
            "--port=80",
        ],
        vec!["create", "service", "nodeport", "np", "--tcp=80:8080"],
        vec!["create", "job", "j", "--image=busybox", "--", "echo", "hi"],
        vec![
            "create",
            "cronjob",
            "c",
            "--image=busybox",
            "--schedule=*/5 * * * *",
        ],
        vec![
            "create",
            "ingress",
            "ing",
            "--rule=foo.com/bar=svc:8080",
            "--class=nginx",
        ],
        vec![
            "create",
            "pdb",
            "pdb",
            "--selector=app=d",
            "--min-available=1",
        ],
        vec!["create", "role", "r", "--verb=get", "--resource=pods"],
        vec!["create", "rolebinding", "rb", "--role=r", "--user=alice"],
        vec![
            "create",
            "clusterrole",
            "cr",
            "--verb=list",
            "--resource=nodes",
        ],
        vec![
            "create",
            "clusterrolebinding",
            "crb",
            "--clusterrole=cr",
            "--group=ops",
        ],
        vec![
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--description=important",
        ],
        vec!["create", "quota", "q", "--hard=pods=10"],
    ] {
        let out = s.kubectl(&args);
        let (o, e) = text(&out);
        assert!(
            out.status.success() && o.contains("created"),
            "kubectl {args:?}: {o}{e}"
        );
    }
    assert_eq!(
        jp(
            &s,
            &["deploy", "d"],
            "{.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}"
        ),
        "0 80",
        "--replicas=0 stays 0"
    );
    assert_eq!(
        jp(
            &s,
            &["svc", "np"],
            "{.spec.type} {.spec.ports[0].targetPort}"
        ),
        "NodePort 8080"
    );
    let np: i64 = jp(&s, &["svc", "np"], "{.spec.ports[0].nodePort}")
        .parse()
        .unwrap();
    assert!((30000..=32767).contains(&np));
    assert_eq!(
        jp(
            &s,
            &["ing", "ing"],
            "{.spec.rules[0].host} {.spec.rules[0].http.paths[0].backend.service.port.number}"
        ),
        "foo.com 8080"
    );
    assert_eq!(jp(&s, &["pdb", "pdb"], "{.spec.minAvailable}"), "1");
    assert_eq!(
        jp(
            &s,
            &["clusterrolebinding", "crb"],
            "{.subjects[0].kind} {.subjects[0].apiGroup}"
        ),
        "Group rbac.authorization.k8s.io"
    );
    assert_eq!(
        jp(&s, &["pc", "high"], "{.value} {.preemptionPolicy}"),
        "1000 PreemptLowerPriority"
    );
    let pcs = s.kubectl_ok(&["get", "priorityclasses", "-o", "name"]);
    assert!(
        pcs.contains("system-cluster-critical") && pcs.contains("system-node-critical"),
        "{pcs}"
    );
}

#[test]
fn service_addresses_and_ports_are_never_handed_out_twice() {
    let s = Server::start_args(&[
        "--service-cluster-ip-range",
        "10.200.0.0/26",
        "--service-node-port-range",
        "31000-31059",
    ]);
    // 40 NodePort Services created at once from separate kubectl processes: 40 addresses
    // out of 61 usable, 40 ports out of 60 — collisions are likely and must be retried.
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let svc = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\nspec:\n  type: NodePort\n  ports: [{{port: 80}}]\n");
            let kc = s.kubeconfig();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut child = std::process::Command::new("kubectl")
                    .env("KUBECONFIG", kc)
                    .args(["create", "-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(svc.as_bytes()).unwrap();
                child.wait_with_output().unwrap()
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.status.success(), "{:?}", text(&out));
    }
    let ips = s.kubectl_ok(&[
        "get",
        "svc",
        "-o",
        "jsonpath={range .items[*]}{.spec.clusterIP}{\"\\n\"}{end}",
    ]);
    let ips: Vec<&str> = ips.lines().collect();
    assert_eq!(ips.len(), 41, "40 and the kubernetes Service");
    assert_eq!(
        ips.iter().collect::<HashSet<_>>().len(),
        41,
        "an address was handed out twice: {ips:?}"
    );
    assert!(ips.iter().all(|ip| ip.starts_with("10.200.0.")), "{ips:?}");
    let ports = s.kubectl_ok(&[
        "get",
        "svc",
        "-o",
        "jsonpath={range .items[*]}{.spec.ports[0].nodePort}{\"\\n\"}{end}",
    ]);
    let ports: Vec<i64> = ports
        .lines()
        .filter(|l| !l.is_empty())
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 40);
    assert_eq!(
        ports.iter().collect::<HashSet<_>>().len(),
        40,
        "a port was handed out twice: {ports:?}"
    );

    // Taken, out of range, and released on delete.
    let taken_ip = jp(&s, &["svc", "s0"], "{.spec.clusterIP}");
    let taken_port = jp(&s, &["svc", "s0"], "{.spec.ports[0].nodePort}");
    let want = |ip: &str, port: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: mine\nspec:\n  type: NodePort\n  clusterIP: {ip}\n  ports: [{{port: 80, nodePort: {port}}}]\n")
    };
    let out = s.kubectl_stdin(&["create", "-f", "-"], &want(&taken_ip, &taken_port));
    let (_, e) = text(&out);
    assert!(!out.status.success());
    assert!(
        e.contains("provided IP is already allocated")
            && e.contains("provided port is already allocated"),
        "{e}"
    );
    let out = s.kubectl_stdin(&["create", "-f", "-"], &want("10.0.0.9", "80"));
    let (_, e) = text(&out);
    assert!(
        e.contains("is not in the valid range")
            && e.contains("provided port is not in the valid range"),
        "{e}"
    );
    s.kubectl_ok(&["delete", "svc", "s0"]);
    let out = s.kubectl_stdin(&["create", "-f", "-"], &want(&taken_ip, &taken_port));
    assert!(out.status.success(), "released on delete: {:?}", text(&out));
    // The address of a Service does not change on update (to an address other than its
    // own: patching in the same value is a no-op and succeeds, as upstream).
    let other = if taken_ip == "10.200.0.62" {
        "10.200.0.61"
    } else {
        "10.200.0.62"
    };
    let out = s.kubectl(&[
        "patch",
        "svc",
        "mine",
        "-p",
        &format!(r#"{{"spec":{{"clusterIP":"{other}"}}}}"#),
    ]);
    let (_, e) = text(&out);
    assert!(
        !out.status.success() && e.contains("may not change once set"),
        "{e}"
    );
}

fn pod(spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {spec}\n")
}
fn deploy(spec: &str) -> String {
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec: {spec}\n")
}
const TPL: &str =
    "template: {metadata: {labels: {app: a}}, spec: {containers: [{name: c, image: i}]}}";

#[test]
fn invalid_manifests_are_refused_with_upstream_field_paths() {
    let s = Server::start();
    let svc = |spec: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {spec}\n")
    };
    let cases: Vec<(String, &str)> = vec![
        (pod("{containers: []}"), "spec.containers: Required value"),
        (pod("{containers: [{name: a, image: i}, {name: a, image: j}]}"), "spec.containers[1].name: Duplicate value: \"a\""),
        (pod("{containers: [{name: a, image: i, ports: [{containerPort: 70000}]}]}"), "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
        (pod("{containers: [{name: a, image: i, resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}}]}"), "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"),
        (pod("{containers: [{name: a, image: i, volumeMounts: [{name: data, mountPath: /d}]}]}"), "spec.containers[0].volumeMounts[0].name: Not found: \"data\""),
        (pod("{containers: [{name: a, image: i, readinessProbe: {exec: {command: [x]}, periodSeconds: -1}, livenessProbe: {exec: {command: [x]}, successThreshold: 2}}]}"), "* spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1\n* spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0"),
        (pod("{containers: [{name: a, image: i, resources: {limits: {gpus: '1'}}}]}"), "spec.containers[0].resources.limits[gpus]: Invalid value: \"gpus\": must be a standard resource for containers"),
        (pod("{containers: [{name: a, image: i}], volumes: [{name: v, emptyDir: {}, configMap: {name: x}}]}"), "spec.volumes[0].configMap: Forbidden: may not specify more than 1 volume type"),
        (pod("{containers: [{name: a, image: i, env: [{name: A, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}], volumeMounts: [{name: v, mountPath: /a}, {name: v, mountPath: /a}], securityContext: {runAsUser: -1}}], volumes: [{name: v, emptyDir: {}}]}"),
            "* spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty\n* spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique\n* spec.containers[0].securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive"),
        (pod("{containers: [{name: a, image: i}], hostname: Bad_Host, nodeSelector: {'bad key': x}, tolerations: [{key: a, operator: Maybe}]}"),
            "* spec.hostname: Invalid value: \"Bad_Host\": a lowercase RFC 1123 label"),
        (pod("{containers: [{name: a, image: i}], tolerations: [{key: a, operator: Maybe}, {operator: Equal}], affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: a, operator: Bogus}]}]}}}}"),
            "* spec.tolerations[0].operator: Unsupported value: \"Maybe\": supported values: \"Equal\", \"Exists\"\n* spec.tolerations[1].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"\n* spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: Invalid value: \"Bogus\": not a valid selector operator"),
        (svc("{selector: {app: 'bad value!'}, ports: [{port: 80}]}"), "spec.selector: Invalid value: \"bad value!\": a valid label must be an empty string"),
        (svc("{ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{port: 80}]}"),
            "* spec.ipFamilies[1]: Invalid value: \"IPv6\": not configured on this cluster\n* spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"),
        ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: a-name-that-is-long-enough-to-exceed-fifty-two-characters}\nspec: {schedule: '* * * * *', jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: i}]}}}}}\n".into(),
            "metadata.name: Invalid value: \"a-name-that-is-long-enough-to-exceed-fifty-two-characters\": must be no more than 52 characters"),
        (pod("{containers: [{name: a, image: i}], priorityClassName: nope}"), "pods \"p\" is forbidden: no PriorityClass with name nope was found"),
        (pod("{initContainers: [{name: s, image: i, restartPolicy: Never}], containers: [{name: a, image: i, restartPolicy: Always}], dnsPolicy: None, hostNetwork: true}").replace("name: a, image: i,", "name: a, image: i, ports: [{containerPort: 80, hostPort: 81}],"),
            "* spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"\n* spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers\n* spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true"),
        (pod("{containers: [{name: a, image: i}], dnsPolicy: None}"), "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, finalizers: ['bad finalizer'], ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: x}]}\n".into(),
            "* metadata.finalizers[0]: Invalid value: \"bad finalizer\": name part must consist of alphanumeric characters"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: x}]}\n".into(),
            "metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"),
        ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {ttlSecondsAfterFinished: -1, parallelism: 2, completionMode: Indexed, template: {spec: {restartPolicy: Never, containers: [{name: c, image: i}]}}}\n".into(),
            "spec.completions: Required value: when completion mode is Indexed"),
        ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: cj}\nspec: {schedule: 'TZ=UTC * * * * *', jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: i}]}}}}}\n".into(),
            "spec.schedule: Invalid value: \"TZ=UTC * * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}, ingress: [{ports: [{port: 70000}], from: [{ipBlock: {cidr: nope}}]}]}\n".into(),
            "* spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive\n* spec.ingress[0].from[0].ipBlock.cidr: Invalid value: \"nope\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"),
        ("apiVersion: v1\nkind: Node\nmetadata: {name: nd}\nspec: {taints: [{key: a, effect: Sometimes}]}\n".into(),
            "spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""),
        ("apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv}\nspec: {capacity: {storage: 1Gi}, accessModes: [ReadSometimes], hostPath: {path: /x}}\n".into(),
            "spec.accessModes[0]: Unsupported value: \"ReadSometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""),
        ("apiVersion: v1\nkind: LimitRange\nmetadata: {name: lr}\nspec: {limits: [{type: Container, min: {cpu: '2'}, max: {cpu: '1'}}]}\n".into(),
            "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"),
        ("apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc}\nspec: {selector: {app: b}, template: {metadata: {labels: {app: c}}, spec: {containers: [{name: c, image: i}]}}}\n".into(),
            "spec.template.metadata.labels: Invalid value: {\"app\":\"c\"}: `selector` does not match template `labels`"),
        ("apiVersion: v1\nkind: Endpoints\nmetadata: {name: ep}\nsubsets: [{addresses: [{ip: nope}], ports: [{port: 80}]}]\n".into(),
            "subsets[0].addresses[0].ip: Invalid value: \"nope\": must be a valid IP address"),
        ("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: w}\nwebhooks: [{name: a.example.com, failurePolicy: Maybe, sideEffects: None, admissionReviewVersions: [v1], clientConfig: {url: 'https://x'}}]\n".into(),
            "webhooks[0].failurePolicy: Unsupported value: \"Maybe\": supported values: \"Fail\", \"Ignore\""),
        ("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ic}\nspec: {controller: 'not a path'}\n".into(),
            "spec.controller: Invalid value: \"not a path\": must be a domain-prefixed path (such as \"acme.io/foo\")"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec: {scaleTargetRef: {kind: Deployment, name: d, apiVersion: apps/v1}, maxReplicas: 3, metrics: [{type: Vibes}]}\n".into(),
            "spec.metrics[0].type: Unsupported value: \"Vibes\""),
        ("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: v}\nspec: {validations: [{expression: 'object.spec ==='}]}\n".into(),
            "* spec.matchConstraints: Required value\n* spec.validations[0].expression: Invalid value: \"object.spec ===\": compilation failed"),
        (pod("{containers: [{name: a, image: i, resources: {limits: {memory: lots}}}]}"), "Pod in version \"v1\" cannot be handled as a Pod: spec.containers[0].resources.limits.memory: quantities must match the regular expression"),
        // Scalars of the wrong type are refused as upstream's typed decode refuses them.
        (deploy(&format!("{{replicas: three, selector: {{matchLabels: {{app: a}}}}, {TPL}}}")), "Deployment in version \"v1\" cannot be handled as a Deployment: cannot unmarshal string into field spec.replicas of type int32"),
        (pod("{restartPolicy: Sometimes, containers: [{name: a, image: i}]}"), "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""),
        (pod("{containers: [{name: a}]}"), "spec.containers[0].image: Required value"),
        (pod("{containers: [{name: a, image: i, env: [{name: 1X, value: v}]}]}"), "spec.containers[0].env[0].name: Invalid value: \"1X\": a valid environment variable name"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a, image: i}]}\n".into(), "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        (deploy(&format!("{{selector: {{matchLabels: {{app: b}}}}, {TPL}}}")), "spec.template.metadata.labels: Invalid value: {\"app\":\"a\"}: `selector` does not match template `labels`"),
        (deploy(&format!("{{replicas: -1, selector: {{matchLabels: {{app: a}}}}, {TPL}}}")), "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        (deploy(&format!("{{{TPL}}}")), "spec.selector: Required value"),
        (deploy("{selector: {matchLabels: {app: a}}, template: {metadata: {labels: {app: a}}, spec: {restartPolicy: Never, containers: [{name: c, image: i}]}}}"), "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""),
        (deploy(&format!("{{selector: {{matchLabels: {{app: a}}}}, strategy: {{rollingUpdate: {{maxSurge: 0, maxUnavailable: 0}}}}, {TPL}}}")), "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"),
        (format!("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: r}}\nspec: {{selector: {{matchLabels: {{app: x}}}}, {TPL}}}\n"), "spec.template.metadata.labels: Invalid value"),
        (format!("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: s}}\nspec: {{podManagementPolicy: Whenever, selector: {{matchLabels: {{app: a}}}}, {TPL}}}\n"), "spec.podManagementPolicy: Unsupported value: \"Whenever\""),
        ("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: ds}\nspec: {selector: {matchLabels: {app: a}}, template: {metadata: {labels: {app: a}}, spec: {containers: []}}}\n".into(), "spec.template.spec.containers: Required value"),
        ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {template: {spec: {restartPolicy: Always, containers: [{name: c, image: i}]}}}\n".into(), "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""),
        ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {backoffLimit: -1, template: {spec: {restartPolicy: Never, containers: [{name: c, image: i}]}}}\n".into(), "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"),
        ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {schedule: every day, jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: i}]}}}}}\n".into(), "spec.schedule: Invalid value: \"every day\""),
        ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {schedule: '@daily', concurrencyPolicy: Sometimes, jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: i}]}}}}}\n".into(), "spec.concurrencyPolicy: Unsupported value: \"Sometimes\""),
        (svc("{selector: {app: a}}"), "spec.ports: Required value"),
        (svc("{ports: [{port: 70000}]}"), "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"),
        (svc("{ports: [{port: 80}, {port: 443}]}"), "spec.ports[0].name: Required value"),
        (svc("{ports: [{port: 80, nodePort: 30080}]}"), "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
        (svc("{type: Magic, ports: [{port: 80}]}"), "spec.type: Unsupported value: \"Magic\""),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\nspec: {ports: [{port: 80}]}\n".into(), "metadata.name: Invalid value: \"1web\": a DNS-1035 label"),
        ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {resources: {requests: {storage: 1Gi}}}\n".into(), "spec.accessModes: Required value"),
        ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {accessModes: [ReadWriteOnce]}\n".into(), "spec.resources[storage]: Required value"),
        ("apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: v}\nspec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce]}\n".into(), "spec: Required value: must specify a volume type"),
        ("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec: {rules: [{http: {paths: [{path: /, backend: {service: {name: s, port: {number: 80}}}}]}}]}\n".into(), "spec.rules[0].http.paths[0].pathType: Required value"),
        ("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec: {rules: [{http: {paths: [{path: rel, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}]}}]}\n".into(), "spec.rules[0].http.paths[0].path: Invalid value: \"rel\": must be an absolute path"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}, policyTypes: [Sideways]}\n".into(), "spec.policyTypes[0]: Unsupported value: \"Sideways\""),
        ("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\nrules: [{apiGroups: [''], resources: [pods]}]\n".into(), "rules[0].verbs: Required value"),
        ("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Thing, name: x}\nsubjects: [{kind: User, name: a}]\n".into(), "roleRef.kind: Unsupported value: \"Thing\""),
        ("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: crb}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: x}\nsubjects: [{kind: ServiceAccount, name: a}]\n".into(), "subjects[0].namespace: Required value"),
        ("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: sc}\n".into(), "provisioner: Required value"),
        ("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: huge}\nvalue: 2000000000\n".into(), "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"),
        ("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: system-mine}\nvalue: 10\n".into(), "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved"),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: d}, minReplicas: 3, maxReplicas: 1}\n".into(), "spec.maxReplicas: Invalid value: 1: must be greater than or equal to `minReplicas`"),
        ("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\nspec: {minAvailable: 1, maxUnavailable: 1}\n".into(), "minAvailable and maxUnavailable cannot be both set"),
        ("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: rc}\n".into(), "handler: Required value"),
        ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: es}\naddressType: IPv5\nendpoints: []\n".into(), "addressType: Unsupported value: \"IPv5\""),
        ("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: w}\nwebhooks: [{name: hook, sideEffects: None, admissionReviewVersions: [v1], clientConfig: {url: 'https://x'}}]\n".into(), "webhooks[0].name: Invalid value: \"hook\": should be a domain with at least three segments separated by dots"),
        ("apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {name: csr}\nspec: {signerName: example.com/x}\n".into(), "spec.request: Required value"),
        ("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: q}\nspec: {hard: {pods: many}}\n".into(), "ResourceQuota in version \"v1\" cannot be handled as a ResourceQuota: spec.hard.pods: quantities must match"),
        ("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: q}\nspec: {hard: {pods: 1500m, secrets: \"-1\"}}\n".into(), "* spec.hard[pods]: Invalid value: \"1500m\": must be an integer\n* spec.hard[secrets]: Invalid value: \"-1\": must be greater than or equal to 0"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {'bad key': v}\n".into(), "data[bad key]"),
    ];
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (manifest, want) in &cases {
        let out = s.kubectl_stdin(&["create", "-f", "-"], manifest);
        let (_, e) = text(&out);
        if out.status.success() || !e.contains(want) {
            failures.push(format!("--- {manifest}\nwanted: {want}\ngot: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} not refused as upstream:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn immutable_fields_stay_put() {
    let s = Server::start();
    let d = deploy(&format!("{{selector: {{matchLabels: {{app: a}}}}, {TPL}}}"));
    assert!(s.kubectl_stdin(&["create", "-f", "-"], &d).status.success());
    let out = s.kubectl(&["patch", "deploy", "d", "--type=merge", "-p", r#"{"spec":{"selector":{"matchLabels":{"app":"b"}},"template":{"metadata":{"labels":{"app":"b"}}}}}"#]);
    let (_, e) = text(&out);
    assert!(
        e.contains("spec.selector: Invalid value") && e.contains("field is immutable"),
        "{e}"
    );
    assert!(s
        .kubectl_stdin(
            &["create", "-f", "-"],
            &pod("{containers: [{name: a, image: 'i:1'}]}")
        )
        .status
        .success());
    // An image may change; anything else in a Pod's spec may not.
    s.kubectl_ok(&[
        "patch",
        "pod",
        "p",
        "-p",
        r#"{"spec":{"containers":[{"name":"a","image":"i:2"}]}}"#,
    ]);
    let out = s.kubectl(&[
        "patch",
        "pod",
        "p",
        "-p",
        r#"{"spec":{"containers":[{"name":"a","args":["x"]}]}}"#,
    ]);
    let (_, e) = text(&out);
    assert!(
        e.contains("spec: Forbidden: pod updates may not change fields other than"),
        "{e}"
    );
    let rb = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects: [{kind: User, name: a}]\n";
    assert!(s.kubectl_stdin(&["create", "-f", "-"], rb).status.success());
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &rb.replace("name: view", "name: edit"),
    );
    let (_, e) = text(&out);
    assert!(
        e.contains("roleRef: Invalid value") && e.contains("cannot change roleRef"),
        "{e}"
    );

    // A StatefulSet keeps its serviceName and claim templates; its replicas may change.
    let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template: {metadata: {labels: {app: db}}, spec: {containers: [{name: c, image: i}]}}\n";
    assert!(s
        .kubectl_stdin(&["create", "-f", "-"], sts)
        .status
        .success());
    let out = s.kubectl(&[
        "patch",
        "sts",
        "db",
        "--type=merge",
        "-p",
        r#"{"spec":{"serviceName":"other"}}"#,
    ]);
    let (_, e) = text(&out);
    assert!(
        e.contains("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"),
        "{e}"
    );
    s.kubectl_ok(&["scale", "sts", "db", "--replicas=3"]);
    // A claim's spec is fixed too, and its storage never shrinks.
    let pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: claim}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}\n";
    assert!(s
        .kubectl_stdin(&["create", "-f", "-"], pvc)
        .status
        .success());
    let out = s.kubectl(&[
        "patch",
        "pvc",
        "claim",
        "--type=merge",
        "-p",
        r#"{"spec":{"accessModes":["ReadWriteMany"],"resources":{"requests":{"storage":"1Gi"}}}}"#,
    ]);
    let (_, e) = text(&out);
    assert!(
        e.contains("* spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims")
            && e.contains("* spec.resources.requests.storage: Forbidden: field can not be less than previous value"),
        "{e}"
    );
}

const EVERY_OTHER_TYPE: &str = r#"
apiVersion: v1
kind: Endpoints
metadata: {name: legacy}
subsets: [{addresses: [{ip: 10.1.2.3}], ports: [{port: 8080, name: http}]}]
---
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {node-role.kubernetes.io/worker: ""}}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-a}
spec: {capacity: {storage: 5Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /srv/pv-a}, storageClassName: local}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, storageClassName: local}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: rc}}
    spec: {containers: [{name: c, image: "nginx:1.25"}]}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: quota}
spec: {hard: {pods: "10", requests.cpu: "4"}}
---
apiVersion: v1
kind: LimitRange
metadata: {name: limits}
spec: {limits: [{type: Container, default: {cpu: 500m}}]}
---
apiVersion: v1
kind: PodTemplate
metadata: {name: tpl}
template:
  metadata: {labels: {app: tpl}}
  spec: {containers: [{name: c, image: "busybox:1.36"}]}
---
apiVersion: apps/v1
kind: ControllerRevision
metadata: {name: rev-1}
revision: 1
data: {spec: {template: {}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: hpa2}
spec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}, maxReplicas: 5}
---
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: hpa1}
spec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}, maxReplicas: 4, targetCPUUtilizationPercentage: 70}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: pdb}
spec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site}
spec:
  ingressClassName: nginx
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
  rules:
  - host: shop.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.1.2.3], conditions: {ready: true}}]
ports: [{name: http, port: 80}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-reader}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ops-read-nodes}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-reader}
subjects: [{kind: Group, name: ops}]
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: hostpath.csi.k8s.io}
spec: {}
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata: {name: node-a}
spec: {drivers: [{name: hostpath.csi.k8s.io, nodeID: node-a}]}
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {name: va-1}
spec: {attacher: hostpath.csi.k8s.io, nodeName: node-a, source: {persistentVolumeName: pv-a}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: batch-low}
value: 100
description: Batch work.
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: gvisor}
handler: runsc
---
apiVersion: certificates.k8s.io/v1
# A real request for CN=alice (openssl req -new -newkey ec ...): the request is parsed and its signature checked.
kind: CertificateSigningRequest
metadata: {name: alice}
spec: {request: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlISk1ISUNBUUF3RURFT01Bd0dBMVVFQXd3RllXeHBZMlV3V1RBVEJnY3Foa2pPUFFJQkJnZ3Foa2pPUFFNQgpCd05DQUFUck9HMDBHanYySGs4OXFUQk1nbzhQYkVOS2F3eEpqRldrbTBtUzVSRlAwbjJkdGlpZ3RXTGkwQ01yCjJvOXU2UHl0dlVOcXVNdVVqSHhReXNUVjhDNUNvQUF3Q2dZSUtvWkl6ajBFQXdJRFJ3QXdSQUlnUXN3Yno3T2YKOE9UdVF4NVVqd2RaVVNiNm9sRy82LzlBTFFaQlZoR0QzYVFDSUhKSkJ5QUdNZmZpaWpmTDNNcHFGV1NIUnFZNApCTVB5V00yM2xyY290NFlXCi0tLS0tRU5EIENFUlRJRklDQVRFIFJFUVVFU1QtLS0tLQo=, signerName: kubernetes.io/kube-apiserver-client, usages: [client auth]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: policy}
webhooks:
- name: policy.example.com
  sideEffects: None
  admissionReviewVersions: [v1]
  clientConfig: {service: {name: policy, namespace: default}}
  rules: [{apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: inject}
webhooks:
- name: inject.example.com
  sideEffects: None
  admissionReviewVersions: [v1]
  clientConfig: {url: "https://inject.example.com/mutate"}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: replicas-limit}
spec:
  matchConstraints: {resourceRules: [{apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}]}
  validations: [{expression: "object.spec.replicas <= 5"}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: replicas-limit}
spec: {policyName: replicas-limit, validationActions: [Deny]}
"#;

#[test]
fn every_other_built_in_type_is_stored_defaulted_and_printed() {
    let s = Server::start();
    let out = s.kubectl_stdin(&["apply", "-f", "-"], EVERY_OTHER_TYPE);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert_eq!(
        o.lines().filter(|l| l.ends_with(" created")).count(),
        28,
        "{o}"
    );
    // Read back with upstream defaults.
    assert_eq!(
        jp(
            &s,
            &["pv", "pv-a"],
            "{.spec.persistentVolumeReclaimPolicy} {.spec.volumeMode}"
        ),
        "Retain Filesystem"
    );
    assert_eq!(
        jp(&s, &["pvc", "claim"], "{.spec.volumeMode}"),
        "Filesystem"
    );
    // The binder pairs them (class `local` binds at once).
    capstan_e2e::wait_for("pv-a to bind", std::time::Duration::from_secs(30), || {
        (jp(&s, &["pv", "pv-a"], "{.status.phase}") == "Bound"
            && jp(&s, &["pvc", "claim"], "{.status.phase} {.spec.volumeName}") == "Bound pv-a")
            .then_some(())
    });
    assert_eq!(
        jp(
            &s,
            &["rc", "rc"],
            "{.spec.selector.app} {.metadata.labels.app} {.spec.template.spec.restartPolicy}"
        ),
        "rc rc Always"
    );
    assert_eq!(
        jp(
            &s,
            &["hpa.v2.autoscaling", "hpa2"],
            "{.spec.minReplicas} {.spec.metrics[0].resource.target.averageUtilization}"
        ),
        "1 80"
    );
    assert_eq!(
        jp(
            &s,
            &["csidriver", "hostpath.csi.k8s.io"],
            "{.spec.attachRequired} {.spec.fsGroupPolicy} {.spec.volumeLifecycleModes}"
        ),
        "true ReadWriteOnceWithFSType [\"Persistent\"]"
    );
    assert_eq!(
        jp(&s, &["pc", "batch-low"], "{.preemptionPolicy}"),
        "PreemptLowerPriority"
    );
    assert_eq!(jp(&s, &["validatingwebhookconfiguration", "policy"], "{.webhooks[0].failurePolicy} {.webhooks[0].matchPolicy} {.webhooks[0].timeoutSeconds} {.webhooks[0].rules[0].scope} {.webhooks[0].clientConfig.service.port}"), "Fail Equivalent 10 * 443");
    assert_eq!(
        jp(
            &s,
            &["mutatingwebhookconfiguration", "inject"],
            "{.webhooks[0].reinvocationPolicy}"
        ),
        "Never"
    );
    assert_eq!(
        jp(
            &s,
            &["validatingadmissionpolicy", "replicas-limit"],
            "{.spec.failurePolicy} {.spec.matchConstraints.matchPolicy}"
        ),
        "Fail Equivalent"
    );
    assert_eq!(
        jp(&s, &["endpointslice", "web-abc"], "{.ports[0].protocol}"),
        "TCP"
    );
    assert_eq!(
        jp(
            &s,
            &["endpoints", "legacy"],
            "{.subsets[0].ports[0].protocol}"
        ),
        "TCP"
    );
    // Tables with upstream columns.
    let header = |what: &[&str]| -> Vec<String> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        s.kubectl_ok(&args)
            .lines()
            .next()
            .unwrap_or("")
            .split("  ")
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    assert_eq!(
        header(&["pv"]),
        [
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ]
    );
    assert_eq!(
        header(&["pvc"]),
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ]
    );
    assert_eq!(
        header(&["ingress"]),
        ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    );
    assert_eq!(
        header(&["hpa"]),
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    assert_eq!(
        header(&["nodes"]),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    );
    assert_eq!(
        header(&["rc"]),
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    );
    let ing = s.kubectl_ok(&["get", "ingress", "site"]);
    assert!(
        ing.contains("shop.example.com") && ing.contains("80, 443") && ing.contains("nginx"),
        "{ing}"
    );
    let nodes = s.kubectl_ok(&["get", "nodes"]);
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("node-a") && l.contains("Unknown") && l.contains("worker")),
        "{nodes}"
    );
    let pdb = s.kubectl_ok(&["get", "pdb"]);
    assert!(
        pdb.lines()
            .any(|l| l.starts_with("pdb") && l.contains("N/A")),
        "{pdb}"
    );
    // Every one of them is listed under its short name or plural.
    for (what, name) in [
        ("ep", "legacy"),
        ("podtemplates", "tpl"),
        ("controllerrevisions", "rev-1"),
        ("quota", "quota"),
        ("limits", "limits"),
        ("ingressclasses", "nginx"),
        ("roles", "pod-reader"),
        ("clusterroles", "node-reader"),
        ("clusterrolebindings", "ops-read-nodes"),
        ("csinodes", "node-a"),
        ("volumeattachments", "va-1"),
        ("runtimeclasses", "gvisor"),
        ("csr", "alice"),
        ("validatingadmissionpolicybindings", "replicas-limit"),
    ] {
        let listed = s.kubectl_ok(&["get", what, "-o", "name"]);
        assert!(
            listed.lines().any(|l| l.ends_with(&format!("/{name}"))),
            "{what}: {listed}"
        );
    }
}

#[test]
fn quantities_are_stored_in_canonical_form() {
    let s = Server::start();
    // YAML numbers and non-canonical strings, as people write them.
    let out = s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  containers:\n  - name: c\n    image: i\n    resources:\n      limits: {cpu: 0.5, memory: 1.5Gi, ephemeral-storage: 2000M}\n      requests: {cpu: 100m, memory: 1024Mi}\n",
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        jp(
            &s,
            &["pod", "q"],
            "{.spec.containers[0].resources.limits.cpu} {.spec.containers[0].resources.limits.memory} {.spec.containers[0].resources.limits.ephemeral-storage} {.spec.containers[0].resources.requests.memory}"
        ),
        "500m 1536Mi 2G 1Gi"
    );
    // The raw JSON holds strings, so typed clients (kube-rs, client-go) can decode it.
    let raw = s.kubectl_ok(&["get", "--raw", "/api/v1/namespaces/default/pods/q"]);
    let pod: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        pod.pointer("/spec/containers/0/resources/limits/cpu"),
        Some(&serde_json::json!("500m"))
    );
    // A ResourceQuota's hard limits go through the same decode.
    let out = s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: rq}\nspec: {hard: {requests.cpu: 4000m, pods: 10}}\n",
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        jp(
            &s,
            &["resourcequota", "rq"],
            "{.spec.hard.requests\\.cpu} {.spec.hard.pods}"
        ),
        "4 10"
    );
}

#[test]
fn pods_take_their_priority_from_the_class() {
    let s = Server::start();
    let p = |name: &str, extra: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: i}}]{extra}}}\n")
    };
    let out = s.kubectl_stdin(
        &["create", "-f", "-"],
        &p("critical", ", priorityClassName: system-node-critical"),
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        jp(
            &s,
            &["pod", "critical"],
            "{.spec.priority} {.spec.preemptionPolicy}"
        ),
        "2000001000 PreemptLowerPriority"
    );
    // A priority that contradicts the class is refused.
    let out = s.kubectl_stdin(&["create", "-f", "-"], &p("liar", ", priority: 7"));
    let (_, e) = text(&out);
    assert!(
        e.contains("the integer value of priority (7) must not be provided in pod spec; priority admission controller computed 0"),
        "{e}"
    );
    // A global default class applies to pods that name none.
    let out = s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: batch-default}\nvalue: 100\nglobalDefault: true\npreemptionPolicy: Never\n",
    );
    assert!(out.status.success(), "{:?}", text(&out));
    s.kubectl_stdin(&["create", "-f", "-"], &p("plain", ""));
    assert_eq!(
        jp(
            &s,
            &["pod", "plain"],
            "{.spec.priorityClassName} {.spec.priority} {.spec.preemptionPolicy}"
        ),
        "batch-default 100 Never"
    );
}
