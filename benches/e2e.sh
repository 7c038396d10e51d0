#!/usr/bin/env bash
# End-to-end throughput and peak memory of pcp between two hosts on a virtual LAN.
#
# Two network namespaces joined by a veth pair (198.18.0.1 <-> 198.18.0.2); real mDNS
# discovery; the sender reads a file or stdin, the receiver writes to /dev/null or a file.
# Prints one line per case: bytes, seconds, MiB/s, and each side's peak RSS.
#
#   sudo benches/e2e.sh            # builds release first; needs root (ip netns)
#   SIZE_MIB=256 benches/e2e.sh    # smaller data set
#
# Nothing leaves the host: the script re-runs itself in a fresh network namespace, and
# pcp runs only inside the two namespaces it makes, with mDNS and no DHT (the public
# bootstrap list is never dialled). Not part of `cargo bench`.
set -euo pipefail

if [ -z "${PCP_E2E_ISOLATED:-}" ]; then
  export PCP_E2E_ISOLATED=1
  exec unshare --net -- "$0" "$@"
fi

cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
cargo build --release --quiet
PCP=${CARGO_TARGET_DIR:-$PWD/target}/release/pcp
WORK=$(mktemp -d)
A=pcpe2e-$$-a
B=pcpe2e-$$-b
cleanup() {
  ip netns pids "$A" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns pids "$B" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip link add veth-a netns "$A" type veth peer name veth-b netns "$B"
ip -n "$A" addr add 198.18.0.1/24 dev veth-a
ip -n "$B" addr add 198.18.0.2/24 dev veth-b
for ns in "$A" "$B"; do
  ip -n "$ns" link set lo up
done
ip -n "$A" link set veth-a up multicast on
ip -n "$B" link set veth-b up multicast on

head -c "${SIZE_MIB}M" /dev/urandom > "$WORK/random.bin"
# Compressible data: the crate's own sources, repeated.
: > "$WORK/text.bin"
while [ "$(stat -c %s "$WORK/text.bin")" -lt $((SIZE_MIB << 20)) ]; do
  cat src/*.rs >> "$WORK/text.bin"
done
truncate -s "${SIZE_MIB}M" "$WORK/text.bin"

CODE=bubble-enemy-result-increase
# run_case NAME STDIN STDOUT SENDER-ARGS... -- RECEIVER-ARGS...
run_case() {
  local name=$1 input=$2 output=$3; shift 3
  local sargs=() rargs=()
  while [ "$1" != "--" ]; do sargs+=("$1"); shift; done; shift
  rargs=("$@")
  rm -f "$WORK/out"
  ip netns exec "$A" /usr/bin/time -f "%M" -o "$WORK/s.rss" \
    "$PCP" send -q --no-dht --code "$CODE" "${sargs[@]}" <"$input" 2>"$WORK/s.err" &
  local spid=$!
  local t0 t1
  t0=$(date +%s.%N)
  ip netns exec "$B" /usr/bin/time -f "%M" -o "$WORK/r.rss" \
    "$PCP" receive -q -y --no-dht "${rargs[@]}" "$CODE" >"$output" 2>"$WORK/r.err"
  t1=$(date +%s.%N)
  wait "$spid"
  awk -v n="$name" -v b=$((SIZE_MIB << 20)) -v t0="$t0" -v t1="$t1" \
      -v s="$(tail -1 "$WORK/s.rss")" -v r="$(tail -1 "$WORK/r.rss")" \
      'BEGIN { t = t1 - t0; printf "%-28s %6d MiB  %6.2f s  %7.1f MiB/s  rss sender %5.1f MiB  receiver %5.1f MiB\n", n, b/1048576, t, b/1048576/t, s/1024, r/1024 }'
}

echo "pcp e2e: ${SIZE_MIB} MiB per case, two namespaces over veth, $(nproc) cores"
run_case "random file -> stdout" /dev/null /dev/null "$WORK/random.bin" --
run_case "text file -> stdout" /dev/null /dev/null "$WORK/text.bin" --
run_case "random stdin -> stdout" "$WORK/random.bin" /dev/null - --
run_case "random file -> -o file" /dev/null /dev/null "$WORK/random.bin" -- -o "$WORK/out"
cmp "$WORK/random.bin" "$WORK/out" && echo "  (output verified byte-identical)"
run_case "random, --no-compress" /dev/null /dev/null --no-compress "$WORK/random.bin" --
