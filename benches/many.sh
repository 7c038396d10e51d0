#!/usr/bin/env bash
# `pcp send --many` fan-out of standard input: the wall time for N receivers against
# the time for one, on the same links, and the sender's peak RSS.
#
# One sender and up to RECEIVERS hosts on one bridge (network namespaces, veth pairs).
# Each receiver's port on the bridge sends at most RATE (tc tbf), so every receiver
# has the same link and the sender's own link is not the limit: the ratio shows what
# the fan-out costs (the shared buffer, one session and cipher per receiver), not how
# one link divides. Receivers write to /dev/null. Real mDNS, no DHT.
#
#   sudo benches/many.sh                         # 256 MiB, 100mbit, 1 then 4 receivers
#   SIZE_MIB=128 RATE=1gbit RECEIVERS=4 sudo benches/many.sh
#   PCP=path/to/pcp benches/many.sh              # a given binary (else builds release)
#
# Nothing leaves the host: the script re-runs itself in a fresh network namespace, and
# pcp runs only inside the namespaces it makes, with --no-dht. Not part of `cargo bench`.
set -euo pipefail

if [ -z "${PCP_MANY_ISOLATED:-}" ]; then
  export PCP_MANY_ISOLATED=1
  exec unshare --net -- "$0" "$@"
fi

cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-256}
RATE=${RATE:-100mbit}
RECEIVERS=${RECEIVERS:-4}
if [ -z "${PCP:-}" ]; then
  cargo build --release --quiet
  PCP=${CARGO_TARGET_DIR:-$PWD/target}/release/pcp
fi
WORK=$(mktemp -d)
P=pcpmany-$$
SW=$P-sw
hosts=()
cleanup() {
  for ns in "${hosts[@]}" "$SW"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$SW"
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
for i in $(seq 0 "$RECEIVERS"); do
  ns=$P-h$i
  hosts+=("$ns")
  ip netns add "$ns"
  ip link add eth0 netns "$ns" type veth peer name p$i netns "$SW"
  ip -n "$SW" link set p$i master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add 198.18.0.$((i + 1))/24 dev eth0
  ip -n "$ns" link set eth0 up multicast on
  if [ "$i" -gt 0 ]; then
    # What the bridge sends to receiver i: its link.
    ip netns exec "$SW" tc qdisc add dev p$i root tbf rate "$RATE" burst 256kb latency 50ms
  fi
done

head -c "${SIZE_MIB}M" /dev/urandom > "$WORK/random.bin"
CODE=bubble-enemy-result-increase

# run N: the sender with --many N reading the file on stdin, N receivers at once.
run() {
  local n=$1 pids=() t0 t1
  ip netns exec "${hosts[0]}" /usr/bin/time -f "%M" -o "$WORK/s.rss" \
    "$PCP" send -q --no-dht --many "$n" --code "$CODE" - <"$WORK/random.bin" 2>"$WORK/s.err" &
  local spid=$!
  t0=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    ip netns exec "${hosts[$i]}" "$PCP" receive -q -y --no-dht "$CODE" \
      >/dev/null 2>"$WORK/r$i.err" &
    pids+=($!)
  done
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  t1=$(date +%s.%N)
  wait "$spid" || failed=1
  if [ "$failed" -ne 0 ]; then
    echo "run with $n receiver(s) failed:" >&2
    cat "$WORK"/*.err >&2
    exit 1
  fi
  awk -v n="$n" -v b=$((SIZE_MIB << 20)) -v t0="$t0" -v t1="$t1" -v s="$(tail -1 "$WORK/s.rss")" \
    'BEGIN { t = t1 - t0; printf "%d receiver(s)  %6.2f s  %7.1f MiB/s each  sender rss %6.1f MiB\n", n, t, b/1048576/t, s/1024 }'
  awk -v t0="$t0" -v t1="$t1" 'BEGIN { print t1 - t0 }' > "$WORK/t$n"
}

echo "pcp send --many, stdin: ${SIZE_MIB} MiB random, each receiver's link ${RATE}, $(nproc) cores"
run 1
run "$RECEIVERS"
awk -v a="$(cat "$WORK/t$RECEIVERS")" -v b="$(cat "$WORK/t1")" -v n="$RECEIVERS" \
  'BEGIN { printf "time with %d receivers / time with 1: %.2f\n", n, a / b }'
