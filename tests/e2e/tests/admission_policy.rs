//! Policy admission through the real kubectl: ValidatingAdmissionPolicy (Deny, Warn, params
//! from a ConfigMap) and Pod Security admission (enforce, warn, labelling a namespace).

use std::time::Duration;

use capstan_e2e::{apply, text, wait_for, Server};

const WITHIN: Duration = Duration::from_secs(20);

fn policy(name: &str, extra_spec: &str, validation: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {name}
spec:
  failurePolicy: Fail
{extra_spec}  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["deployments"]
  validations:
{validation}"#
    )
}

fn binding(name: &str, policy: &str, actions: &str, env: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {name}
spec:
  policyName: {policy}
  validationActions: [{actions}]
{extra}  matchResources:
    namespaceSelector:
      matchLabels:
        environment: {env}
"#
    )
}

fn namespace(s: &Server, name: &str, labels: &[&str]) {
    s.kubectl_ok(&["create", "namespace", name]);
    if !labels.is_empty() {
        let mut args = vec!["label", "namespace", name];
        args.extend_from_slice(labels);
        s.kubectl_ok(&args);
    }
}

/// Create deployments (new names) until one is refused; the refusal's stderr.
fn refused_create(s: &Server, ns: &str, prefix: &str, replicas: &str) -> String {
    let mut n = 0;
    wait_for("the policy to refuse a deployment", WITHIN, || {
        n += 1;
        let name = format!("{prefix}-{n}");
        let out = s.kubectl(&[
            "create",
            "deployment",
            &name,
            "--image=busybox",
            "--replicas",
            replicas,
            "-n",
            ns,
        ]);
        (!out.status.success()).then(|| text(&out).1)
    })
}

#[test]
fn policy_denies_too_many_replicas_with_its_message() {
    let s = Server::start();
    namespace(&s, "vap-test", &["environment=test"]);
    namespace(&s, "vap-prod", &["environment=prod"]);
    apply(
        &s,
        &policy(
            "demo-policy.example.com",
            "",
            "  - expression: \"object.spec.replicas <= 5\"\n",
        ),
    );
    apply(
        &s,
        &binding(
            "demo-binding-test.example.com",
            "demo-policy.example.com",
            "Deny",
            "test",
            "",
        ),
    );
    let err = refused_create(&s, "vap-test", "big", "6");
    assert!(
        err.contains(
            "deployments.apps \"big-"
        ) && err.contains(
            "is forbidden: ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"
        ),
        "{err}"
    );
    // Within the limit, and outside the binding's namespaces, deployments are created.
    s.kubectl_ok(&[
        "create",
        "deployment",
        "small",
        "--image=busybox",
        "--replicas=5",
        "-n",
        "vap-test",
    ]);
    s.kubectl_ok(&[
        "create",
        "deployment",
        "big",
        "--image=busybox",
        "--replicas=6",
        "-n",
        "vap-prod",
    ]);
    // Scaling past the limit is an UPDATE of the deployment: refused as well.
    let out = s.kubectl(&[
        "patch",
        "deployment",
        "small",
        "-n",
        "vap-test",
        "-p",
        r#"{"spec":{"replicas":9}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("denied request: failed expression"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn warn_action_prints_the_warning_and_admits() {
    let s = Server::start();
    namespace(&s, "vap-warn", &["environment=warn"]);
    apply(
        &s,
        &policy(
            "warn-policy",
            "",
            "  - expression: \"object.spec.replicas <= 2\"\n    message: \"at most two replicas, please\"\n",
        ),
    );
    apply(
        &s,
        &binding("warn-binding", "warn-policy", "Warn", "warn", ""),
    );
    let mut n = 0;
    let warned = wait_for("the Warn binding to warn", WITHIN, || {
        n += 1;
        let name = format!("w-{n}");
        let out = s.kubectl(&[
            "create",
            "deployment",
            &name,
            "--image=busybox",
            "--replicas=3",
            "-n",
            "vap-warn",
        ]);
        assert!(out.status.success(), "{:?}", text(&out));
        let err = text(&out).1;
        err.contains("Warning:").then_some((name, err))
    });
    assert!(
        warned.1.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'warn-policy' with binding 'warn-binding': at most two replicas, please"),
        "{}",
        warned.1
    );
    s.kubectl_ok(&["get", "deployment", &warned.0, "-n", "vap-warn"]);
}

#[test]
fn params_come_from_a_configmap() {
    let s = Server::start();
    namespace(&s, "vap-params", &["environment=params"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "limits",
        "-n",
        "vap-params",
        "--from-literal=maxReplicas=3",
    ]);
    apply(
        &s,
        &policy(
            "param-policy",
            "  paramKind:\n    apiVersion: v1\n    kind: ConfigMap\n  variables:\n  - name: max\n    expression: \"int(params.data.maxReplicas)\"\n",
            "  - expression: \"object.spec.replicas <= variables.max\"\n    messageExpression: \"'replicas must be at most ' + params.data.maxReplicas\"\n    reason: Forbidden\n",
        ),
    );
    apply(
        &s,
        &binding(
            "param-binding",
            "param-policy",
            "Deny",
            "params",
            "  paramRef:\n    name: limits\n    namespace: vap-params\n    parameterNotFoundAction: Deny\n",
        ),
    );
    let err = refused_create(&s, "vap-params", "p", "4");
    assert!(
        err.contains("ValidatingAdmissionPolicy 'param-policy' with binding 'param-binding' denied request: replicas must be at most 3"),
        "{err}"
    );
    s.kubectl_ok(&[
        "create",
        "deployment",
        "fits",
        "--image=busybox",
        "--replicas=3",
        "-n",
        "vap-params",
    ]);
    // The param's new value counts at once (params are read per request).
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "limits",
        "-n",
        "vap-params",
        "-p",
        r#"{"data":{"maxReplicas":"10"}}"#,
    ]);
    s.kubectl_ok(&[
        "create",
        "deployment",
        "now-fits",
        "--image=busybox",
        "--replicas=4",
        "-n",
        "vap-params",
    ]);
    // Without its param the binding denies, as parameterNotFoundAction says.
    s.kubectl_ok(&["delete", "configmap", "limits", "-n", "vap-params"]);
    let out = s.kubectl(&[
        "create",
        "deployment",
        "orphan",
        "--image=busybox",
        "--replicas=1",
        "-n",
        "vap-params",
    ]);
    assert!(
        text(&out)
            .1
            .contains("no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{:?}",
        text(&out)
    );
}

fn pod_yaml(name: &str, ns: &str, security: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
spec:
  containers:
  - name: c
    image: busybox
{security}"#
    )
}

#[test]
fn restricted_refuses_a_privileged_pod_in_upstreams_words() {
    let s = Server::start();
    namespace(
        &s,
        "psa-restricted",
        &["pod-security.kubernetes.io/enforce=restricted"],
    );
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml(
            "priv",
            "psa-restricted",
            "    securityContext:\n      privileged: true\n",
        ),
    );
    assert!(!out.status.success());
    let err = text(&out).1;
    assert!(
        err.contains(r#"pods "priv" is forbidden: violates PodSecurity "restricted:latest": privileged (container "c" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#),
        "{err}"
    );
    // A pod that meets the restricted profile is admitted.
    let ok = pod_yaml(
        "tight",
        "psa-restricted",
        "    securityContext:\n      allowPrivilegeEscalation: false\n      runAsNonRoot: true\n      runAsUser: 1000\n      capabilities:\n        drop: [ALL]\n      seccompProfile:\n        type: RuntimeDefault\n",
    );
    apply(&s, &ok);
}

#[test]
fn baseline_allows_a_plain_pod_and_refuses_host_namespaces() {
    let s = Server::start();
    namespace(
        &s,
        "psa-baseline",
        &["pod-security.kubernetes.io/enforce=baseline"],
    );
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("plain", "psa-baseline", ""),
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(!text(&out).1.contains("Warning"), "{:?}", text(&out));
    let host = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: host\n  namespace: psa-baseline\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: busybox\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], host);
    assert!(
        text(&out).1.contains(r#"pods "host" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#),
        "{:?}",
        text(&out)
    );
    // A label that does not parse is refused with the field named.
    let out = s.kubectl(&[
        "label",
        "namespace",
        "psa-baseline",
        "pod-security.kubernetes.io/warn=strict",
    ]);
    assert!(
        text(&out).1.contains(r#"metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: "strict": must be one of privileged, baseline, restricted"#),
        "{:?}",
        text(&out)
    );
}

#[test]
fn warn_restricted_admits_with_warnings_for_pods_and_templates() {
    let s = Server::start();
    namespace(
        &s,
        "psa-warn",
        &["pod-security.kubernetes.io/warn=restricted"],
    );
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &pod_yaml("loose", "psa-warn", ""));
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).1.contains(r#"Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false)"#),
        "{:?}",
        text(&out)
    );
    s.kubectl_ok(&["get", "pod", "loose", "-n", "psa-warn"]);
    let out = s.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "-n",
        "psa-warn",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out)
            .1
            .contains(r#"Warning: would violate PodSecurity "restricted:latest""#),
        "{:?}",
        text(&out)
    );
}

#[test]
fn enforcing_on_a_namespace_warns_about_its_pods() {
    let s = Server::start();
    namespace(&s, "psa-label", &[]);
    apply(
        &s,
        &pod_yaml(
            "old-1",
            "psa-label",
            "    securityContext:\n      privileged: true\n",
        ),
    );
    apply(
        &s,
        &pod_yaml(
            "old-2",
            "psa-label",
            "    securityContext:\n      privileged: true\n",
        ),
    );
    let out = s.kubectl(&[
        "label",
        "namespace",
        "psa-label",
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let err = text(&out).1;
    assert!(
        err.contains(r#"Warning: existing pods in namespace "psa-label" violate the new PodSecurity enforce level "baseline:latest""#),
        "{err}"
    );
    assert!(
        err.contains("Warning: old-1 (and 1 other pod): privileged"),
        "{err}"
    );
}
