#!/usr/bin/env bash
# Figures for the etcd backend, in one run: `capstan bench` (create, get, list, watch fan-out)
# against one server on SQLite, one server on a 3-member etcd, and three servers on that etcd
# (the bench's clients spread over them: one bench per server at once), then how long the
# controllers' leadership takes to move when its holder is killed.
# Usage: benches/ha_figures.sh [CAPSTAN_BIN] [extra capstan bench flags, e.g. --quick]
# Needs Debian's etcd on the PATH. Everything listens on loopback and is removed at the end.
set -euo pipefail
bin=${1:-target/release/capstan}
shift || true
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A 3-member etcd cluster on loopback, as the tests start it.
cluster="" endpoints=()
declare -a cports pports
for i in 0 1 2; do
  cports[$i]=$(free_port); pports[$i]=$(free_port)
  cluster+="${cluster:+,}m$i=http://127.0.0.1:${pports[$i]}"
  endpoints+=("127.0.0.1:${cports[$i]}")
done
for i in 0 1 2; do
  etcd --name "m$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${cports[$i]}" --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${pports[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "bench-$$" \
    --heartbeat-interval 50 --election-timeout 500 --max-request-bytes 10485760 \
    --experimental-watch-progress-notify-interval 1s --logger zap --log-level error \
    >"$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 200); do curl -s "http://127.0.0.1:${cports[$i]}/health" | grep -q '"health":"true"' && break; sleep 0.1; done
done
datastore="etcd://$(IFS=,; echo "${endpoints[*]}")"

# start NAME [flags…]: a server in $work/NAME; waits for its kubeconfig line.
start() {
  local name=$1; shift
  mkdir -p "$work/$name"
  "$bin" server --no-agent --data-dir "$work/$name" --listen 127.0.0.1:0 "$@" \
    >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  eval "pid_$name=$!"
  for _ in $(seq 300); do grep -q KUBECONFIG "$work/$name.out" 2>/dev/null && return; sleep 0.1; done
  echo "server $name did not start:"; tail -5 "$work/$name.err"; exit 1
}
bench() { "$bin" bench --kubeconfig "$1/kubeconfig" --scenario create --scenario get --scenario list --scenario watch-fanout "${@:2}"; }

echo "== one server on SQLite"
start sqlite
bench "$work/sqlite" "$@"
echo "== one server on a 3-member etcd"
start e1 --datastore "$datastore" --datastore-prefix /one --leader-elect-lease-duration-seconds 4
bench "$work/e1" "$@"
echo "== three servers on that etcd (a bench against each at once)"
start h1 --datastore "$datastore" --datastore-prefix /three --leader-elect-lease-duration-seconds 4
for n in h2 h3; do
  mkdir -p "$work/$n"; cp -r "$work/h1/pki" "$work/h1/admin-token" "$work/$n/"
  start "$n" --datastore "$datastore" --datastore-prefix /three --leader-elect-lease-duration-seconds 4
done
bpids=()
for n in h1 h2 h3; do bench "$work/$n" "$@" >"$work/$n.bench" 2>&1 & bpids+=($!); done
for p in "${bpids[@]}"; do wait "$p"; done
for n in h1 h2 h3; do echo "-- through $n"; cat "$work/$n.bench"; done

echo "== leadership failover (lease 4 s)"
# Which server holds it: each logs "leading: controllers started".
leader=$(grep -l "leading: controllers started" "$work"/h?.err | head -1 | xargs -n1 basename | cut -d. -f1)
watcher=h2; [ "$leader" = h2 ] && watcher=h3
holder() { KUBECONFIG="$work/$watcher/kubeconfig" kubectl -n kube-system get lease kube-controller-manager -o jsonpath='{.spec.holderIdentity}'; }
before=$(holder)
start_ns=$(date +%s%N)
eval "kill -9 \$pid_$leader"
while [ "$(holder)" = "$before" ]; do sleep 0.05; done
echo "the controllers' lease moved from $leader's process $(( ($(date +%s%N) - start_ns) / 1000000 )) ms after kill -9"
