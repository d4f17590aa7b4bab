#!/usr/bin/env bash
# Figures for authorization: `capstan bench` (create and get) as the admin token
# (system:masters, no RBAC lookup) and as a client-certificate user whose rights come from a
# ClusterRoleBinding, before and after 1,000 RoleBindings (100 namespaces x 10, to a group
# the user is in) exist. One server, one run, so the rows compare.
# Usage: benches/rbac_figures.sh [CAPSTAN_BIN] [extra capstan bench flags, e.g. --quick]
set -euo pipefail
bin=${1:-target/release/capstan}
shift || true
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" server --no-agent --data-dir "$work" --listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 300); do grep -q KUBECONFIG "$work/out" 2>/dev/null && break; sleep 0.1; done
admin="$work/kubeconfig"
k() { kubectl --kubeconfig "$admin" "$@"; }
"$bin" kubeconfig --user bench-user --group bench-dev --data-dir "$work" >"$work/user.kubeconfig"
# What the bench does in its own namespace: make and delete it, and everything in it.
k create clusterrole bench-runner --verb='*' --resource=namespaces,configmaps >/dev/null
k create clusterrolebinding bench-runner --clusterrole=bench-runner --user=bench-user >/dev/null
bench() { "$bin" bench --kubeconfig "$1" --scenario create --scenario get "${@:2}"; }

echo "== admin token (system:masters), no RoleBindings"
bench "$admin" "$@"
echo "== client-certificate user through RBAC, no RoleBindings"
bench "$work/user.kubeconfig" "$@"

python3 - "$work/bindings.json" <<'PY'
import json, sys
items = []
for n in range(100):
    ns = f"rbac-bench-{n}"
    items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for b in range(10):
        items.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                      "metadata": {"name": f"view-{b}", "namespace": ns},
                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                      "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "bench-dev"},
                                   {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"someone-{n}-{b}"}]})
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(sys.argv[1], "w"))
PY
k create -f "$work/bindings.json" >/dev/null
echo "RoleBindings now: $(k get rolebindings -A --no-headers | wc -l)"

echo "== admin token (system:masters), 1,000 RoleBindings"
bench "$admin" "$@"
echo "== client-certificate user through RBAC, 1,000 RoleBindings"
bench "$work/user.kubeconfig" "$@"
