#!/usr/bin/env bash
# Figures for streaming: p50/p99 of N `kubectl exec POD -- true` round trips and port-forward
# throughput of a FILE served by busybox httpd in POD next to a direct fetch from its pod IP.
# Usage: KUBECONFIG=... benches/streaming.sh EXEC_POD HTTP_POD [N] [PATH]
set -euo pipefail
exec_pod=$1 http_pod=$2 n=${3:-100} path=${4:-/big}
kubectl=${KUBECTL:-kubectl}
times=()
for _ in $(seq "$n"); do
  start=$(date +%s%N)
  "$kubectl" exec "$exec_pod" -- true
  times+=($(( ($(date +%s%N) - start) / 1000000 )))
done
printf '%s\n' "${times[@]}" | sort -n | awk -v n="$n" '
  { v[NR] = $1 }
  END { printf "exec round trip over %d runs: p50 %d ms, p99 %d ms\n", n, v[int(n*0.5)+0], v[int(n*0.99)+0] }'
port=$(( 20000 + RANDOM % 20000 ))
"$kubectl" port-forward "pod/$http_pod" "$port:8080" >/dev/null 2>&1 &
pf=$!
trap 'kill $pf 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
ip=$("$kubectl" get pod "$http_pod" -o jsonpath='{.status.podIP}')
rate() { curl -s -o /dev/null -w '%{size_download} %{time_total}\n' "$1" |
  awk '{ printf "%.1f MB/s (%d bytes in %.2f s)", $1 / $2 / 1e6, $1, $2 }'; }
echo "port-forward: $(rate "http://127.0.0.1:$port$path")"
echo "direct to the pod IP: $(rate "http://$ip:8080$path")"
