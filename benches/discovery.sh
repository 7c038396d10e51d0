#!/usr/bin/env bash
# Discovery latency: time from `pcp receive` starting to its authenticated session (the
# moment it has the sender's offer, which follows key confirmation by one message), on
# the LAN (mDNS) and on a private DHT of two `pcp node`s (mDNS off).
#
# Four network namespaces on one bridge (198.18.0.1-4): nodes on .1 and .2, the sender on
# .3, the receiver on .4. Each case runs RUNS times (default 5); the sender is started
# and ready (LAN) or advertised (DHT) before the receiver starts. Prints min / median /
# max per case. Goals (issue 3): <= 1 s on the LAN, <= 3 s on the private DHT.
#
#   sudo benches/discovery.sh               # builds release first; needs root (ip netns)
#   PCP=target/debug/pcp benches/discovery.sh
#
# Nothing leaves the host: the script re-runs itself in a fresh network namespace, pcp
# runs only inside the namespaces it makes, and only local nodes are given as bootstrap.
set -euo pipefail

if [ -z "${PCP_DISCOVERY_ISOLATED:-}" ]; then
  export PCP_DISCOVERY_ISOLATED=1
  exec unshare --net -- "$0" "$@"
fi

cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
if [ -z "${PCP:-}" ]; then
  cargo build --release --quiet
  PCP=${CARGO_TARGET_DIR:-$PWD/target}/release/pcp
fi
WORK=$(mktemp -d)
P=pcpdisc-$$
NS=("$P-1" "$P-2" "$P-3" "$P-4")
HUB=$P-hub
cleanup() {
  for ns in "${NS[@]}" "$HUB"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$HUB"
ip -n "$HUB" link add br0 type bridge mcast_snooping 0
ip -n "$HUB" link set br0 up
for i in 1 2 3 4; do
  ns=${NS[$((i - 1))]}
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$HUB" link add "h$i" type veth peer name eth0 netns "$ns"
  ip -n "$HUB" link set "h$i" master br0 up
  ip -n "$ns" addr add "198.18.0.$i/24" dev eth0
  ip -n "$ns" link set eth0 up multicast on
done

# pcp in namespace $1, with a clean environment (no PCP_* from the caller).
pcp_in() {
  local ns=$1; shift
  ip netns exec "$ns" env -u PCP_BOOTSTRAP -u PCP_NO_DHT -u PCP_NO_MDNS -u PCP_CODE "$PCP" "$@"
}

# wait_for FILE PATTERN: until a line of FILE matches (10 s at most).
wait_for() {
  local i
  for i in $(seq 1000); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.01
  done
  echo "timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

# Start the two DHT nodes; A and B are their addresses.
pcp_in "${NS[0]}" node --listen /ip4/198.18.0.1/tcp/4001 >"$WORK/a.out" 2>/dev/null &
wait_for "$WORK/a.out" /p2p/
A=$(head -1 "$WORK/a.out")
pcp_in "${NS[1]}" node --listen /ip4/198.18.0.2/tcp/4001 --bootstrap "$A" >"$WORK/b.out" 2>/dev/null &
wait_for "$WORK/b.out" /p2p/
B=$(head -1 "$WORK/b.out")

head -c 1024 /dev/urandom >"$WORK/file"
CODE=bubble-enemy-result-increase

# one_run SENDER-READY-PATTERN SENDER-ARGS -- RECEIVER-ARGS: prints seconds to the offer.
one_run() {
  local ready=$1; shift
  local sargs=() rargs=()
  while [ "$1" != "--" ]; do sargs+=("$1"); shift; done; shift
  rargs=("$@")
  : >"$WORK/s.err"
  pcp_in "${NS[2]}" send --json --code "$CODE" "${sargs[@]}" "$WORK/file" 2>"$WORK/s.err" &
  local spid=$!
  wait_for "$WORK/s.err" "$ready"
  local t0 t1
  t0=$(date +%s.%N)
  pcp_in "${NS[3]}" receive --json -y "${rargs[@]}" "$CODE" 2>&1 >/dev/null |
    while IFS= read -r line; do
      case $line in *'"event":"offer"'*) date +%s.%N >"$WORK/t1" ;; esac
    done
  wait "$spid"
  t1=$(cat "$WORK/t1")
  rm -f "$WORK/t1"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

# report NAME FILE: min / median / max of the numbers in FILE.
report() {
  sort -n "$2" | awk -v n="$1" '{ v[NR] = $1 } END {
    printf "%-32s min %6.3f s  median %6.3f s  max %6.3f s  (%d runs)\n", n, v[1], v[int((NR + 1) / 2)], v[NR], NR }'
}

echo "pcp discovery: receive start -> authenticated offer, $(nproc) cores, $RUNS runs each"
: >"$WORK/lan"
for _ in $(seq "$RUNS"); do
  one_run '"event":"ready"' --no-dht -- --no-dht >>"$WORK/lan"
done
report "LAN (mDNS)" "$WORK/lan"
: >"$WORK/dht"
for _ in $(seq "$RUNS"); do
  one_run '"ok":true' --no-mdns --bootstrap "$A" -- --no-mdns --bootstrap "$B" >>"$WORK/dht"
done
report "private DHT (2 pcp nodes)" "$WORK/dht"
