#!/usr/bin/env bash
# Same-run comparison of two capstan server binaries (e.g. before and after a change):
# each serves a fresh data dir in turn, twice, and one bench client measures create, get
# and list against it. Usage: benches/compare_servers.sh OLD_BINARY NEW_BINARY
set -u
old=${1:?usage: compare_servers.sh OLD_BINARY NEW_BINARY}
new=${2:?usage: compare_servers.sh OLD_BINARY NEW_BINARY}
client=$new
for round in 1 2; do
  for bin in "$old" "$new"; do
    d=$(mktemp -d)
    # A built-in scheduler (if the binary has one) would only add idle watches.
    extra=""; "$bin" server --help | grep -q -- --disable-scheduler && extra="--disable-scheduler"
    "$bin" server --data-dir "$d" --listen 127.0.0.1:0 $extra >"$d/out" 2>"$d/err" &
    pid=$!
    for _ in $(seq 100); do grep -q KUBECONFIG "$d/out" 2>/dev/null && break; sleep 0.1; done
    echo "== round $round: $bin"
    "$client" bench --kubeconfig "$d/kubeconfig" --scenario create --scenario get --scenario list 2>&1 \
      | grep -v "^check ok" | sed -n '/^capstan bench against/,$p'
    kill "$pid"; wait "$pid" 2>/dev/null
    rm -rf "$d"
  done
done
