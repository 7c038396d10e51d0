#!/usr/bin/env bash
# Two pcp binaries against each other, interleaved on the same data: is a change faster?
#
#   benches/ab.sh OLD NEW                    # e.g. /tmp/pcp-before target/release/pcp
#   SIZE_MIB=256 PAIRS=7 DATA="random text" MBIT=100 benches/ab.sh OLD NEW
#   PROFILE=/tmp/prof benches/ab.sh NEW      # one run of NEW under perf record, both sides
#
# Same setting as benches/compare.sh: two network namespaces joined by a veth pair, the
# data in a tmpfs, the sender reading a file, the receiver writing to stdout (/dev/null;
# the first round of each binary pipes it into b3sum and checks it). Each round runs
# both binaries, in alternating order (OLD NEW, then NEW OLD, ...), and the verdict is the
# median over rounds of OLD's seconds / NEW's seconds: above 1, NEW is faster. On a
# shared machine the spread of those per-round ratios is the noise; it is printed too.
#
# Environment: SIZE_MIB (512), PAIRS (5), DATA ("random text"), MBIT (hold the sender's
# egress to this rate with tbf; empty: no limit), SEND_ARGS (extra `pcp send` options),
# OLD_TRANSPORT and NEW_TRANSPORT (tcp or quic, default tcp: which one each binary's
# sender listens on and its receiver dials; `OLD=NEW NEW_TRANSPORT=quic` compares them),
# PROFILE (a directory: record NEW once per data set with `perf record`, sender and
# receiver, into it; no comparison). Needs root. Nothing leaves the host: the script
# re-runs itself in a fresh network and mount namespace, as compare.sh does.
set -euo pipefail
export LC_ALL=C

SIZE_MIB=${SIZE_MIB:-512}
PAIRS=${PAIRS:-5}
DATA=${DATA:-random text}
MBIT=${MBIT:-}
SEND_ARGS=${SEND_ARGS:-}
PROFILE=${PROFILE:-}
OLD_TRANSPORT=${OLD_TRANSPORT:-tcp}
NEW_TRANSPORT=${NEW_TRANSPORT:-tcp}

if [ -z "${PCP_AB_ISOLATED:-}" ]; then
  if [ -n "$PROFILE" ]; then
    [ "$#" -eq 1 ] || { echo "usage: PROFILE=DIR $0 PCP" >&2; exit 2; }
    set -- "$(realpath "$1")" "$(realpath "$1")"
    mkdir -p "$PROFILE"
    PROFILE=$(realpath "$PROFILE")
  else
    [ "$#" -eq 2 ] || { echo "usage: $0 OLD NEW" >&2; exit 2; }
    set -- "$(realpath "$1")" "$(realpath "$2")"
  fi
  export PCP_AB_ISOLATED=1 PROFILE
  exec unshare --net --mount --propagation private -- "$0" "$@"
fi

OLD=$1
NEW=$2
A=ab-send
B=ab-recv
SADDR=198.18.0.1
WORK=$(mktemp -d -t pcp-ab.XXXXXX)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for ns in "$A" "$B"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  umount -l "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p /run/netns
mount -t tmpfs -o mode=0755 pcp-ab-netns /run/netns
mount -t tmpfs -o mode=0700 pcp-ab "$WORK"
ip netns add "$A"
ip netns add "$B"
ip link add veth-s netns "$A" type veth peer name veth-r netns "$B"
ip -n "$A" addr add "$SADDR/24" dev veth-s
ip -n "$B" addr add 198.18.0.2/24 dev veth-r
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set veth-s up
ip -n "$B" link set veth-r up
if [ -n "$MBIT" ]; then
  ip netns exec "$A" tc qdisc replace dev veth-s root tbf rate "${MBIT}mbit" burst 256kb latency 50ms
fi

head -c "${SIZE_MIB}M" /dev/urandom >"$WORK/random"
: >"$WORK/text"
want=$((SIZE_MIB << 20))
while [ "$(stat -c %s "$WORK/text")" -lt "$want" ]; do
  have=$(stat -c %s "$WORK/text")
  (tar c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    /usr/include /usr/share 2>/dev/null | head -c $((want - have)) >>"$WORK/text") || true
done

PORT=21000
# run BIN DATA CHECK TRANSPORT [PERF-PREFIX]: one transfer; prints "seconds cpu_send cpu_recv".
run() {
  local bin=$1 data=$2 check=$3 transport=$4 prof=${5:-} perf_s="" perf_r=""
  if [ -n "$prof" ]; then
    perf_s="perf record -q ${PERF_OPTS:--g} -o $prof-send.data --"
    perf_r="perf record -q ${PERF_OPTS:--g} -o $prof-recv.data --"
  fi
  PORT=$((PORT + 1))
  local addr=/ip4/$SADDR/tcp/$PORT
  [ "$transport" = quic ] && addr=/ip4/$SADDR/udp/$PORT/quic-v1
  : >"$WORK/s.err"
  # shellcheck disable=SC2086
  ip netns exec "$A" env PCP_CODE=bubble-enemy-result-increase \
    /usr/bin/time -f '%U %S %M %R' -o "$WORK/s.time" $perf_s "$bin" send --no-dht --no-mdns \
    --listen "$addr" $SEND_ARGS "$WORK/$data" </dev/null >/dev/null 2>"$WORK/s.err" &
  local spid=$!
  for _ in $(seq 2000); do
    grep -q '^Ready:' "$WORK/s.err" 2>/dev/null && break
    sleep 0.01
  done
  local t0=$EPOCHREALTIME out=/dev/null
  [ "$check" = 1 ] && out=$WORK/sum
  # shellcheck disable=SC2086
  if [ "$check" = 1 ]; then
    ip netns exec "$B" env PCP_CODE=bubble-enemy-result-increase \
      /usr/bin/time -f '%U %S %M %R' -o "$WORK/r.time" $perf_r "$bin" receive -y --no-dht --no-mdns \
      --peer "$addr" </dev/null 2>"$WORK/r.err" | b3sum >"$out"
  else
    ip netns exec "$B" env PCP_CODE=bubble-enemy-result-increase \
      /usr/bin/time -f '%U %S %M %R' -o "$WORK/r.time" $perf_r "$bin" receive -y --no-dht --no-mdns \
      --peer "$addr" </dev/null >/dev/null 2>"$WORK/r.err"
  fi
  local t1=$EPOCHREALTIME
  wait "$spid" || { echo "ab.sh: sender failed:" >&2; cat "$WORK/s.err" "$WORK/r.err" >&2; exit 1; }
  if [ "$check" = 1 ] && [ "$(cut -d' ' -f1 "$out")" != "$(b3sum <"$WORK/$data" | cut -d' ' -f1)" ]; then
    echo "ab.sh: $bin: the output of $data differs from the data" >&2
    exit 1
  fi
  local s r
  read -r -a s < <(tail -1 "$WORK/s.time")
  read -r -a r < <(tail -1 "$WORK/r.time")
  # seconds, CPU s send, CPU s recv, peak RSS MiB send, recv, minor page faults send, recv
  awk -v t0="$t0" -v t1="$t1" -v s="${s[*]}" -v r="${r[*]}" 'BEGIN {
    split(s, a, " "); split(r, b, " ")
    printf "%.4f %.2f %.2f %.1f %.1f %d %d\n", t1 - t0, a[1] + a[2], b[1] + b[2], a[3] / 1024, b[3] / 1024, a[4], b[4] }'
}

echo "ab: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), ${SIZE_MIB} MiB," \
  "${MBIT:+${MBIT} Mbit/s, }pairs $PAIRS, send args '${SEND_ARGS}'"
echo "old: $OLD ($OLD_TRANSPORT)"
echo "new: $NEW ($NEW_TRANSPORT)"

if [ -n "$PROFILE" ]; then
  for d in $DATA; do
    read -r secs cs cr _ < <(run "$NEW" "$d" 0 "$NEW_TRANSPORT" "$PROFILE/$d")
    awk -v d="$d" -v t="$secs" -v b="$want" -v cs="$cs" -v cr="$cr" \
      'BEGIN { printf "%-7s %.2f s  %.1f MiB/s  cpu send %.2f s  recv %.2f s\n", d, t, b / t / 1048576, cs, cr }'
  done
  exit 0
fi

for d in $DATA; do
  : >"$WORK/rows"
  for p in $(seq "$PAIRS"); do
    check=0
    [ "$p" = 1 ] && check=1
    if [ $((p % 2)) = 1 ]; then order="old new"; else order="new old"; fi
    for which in $order; do
      bin=$OLD transport=$OLD_TRANSPORT
      [ "$which" = new ] && bin=$NEW transport=$NEW_TRANSPORT
      read -r secs cs cr ms mr fs fr < <(run "$bin" "$d" "$check" "$transport")
      echo "$p $which $secs $cs $cr $ms $mr $fs $fr" >>"$WORK/rows"
      awk -v d="$d" -v p="$p" -v w="$which" -v t="$secs" -v b="$want" -v cs="$cs" -v cr="$cr" \
        -v ms="$ms" -v mr="$mr" -v fs="$fs" -v fr="$fr" 'BEGIN {
        printf "  %-7s pair %d %-3s %7.3f s %8.1f MiB/s  cpu %5.2f / %5.2f  rss %5.1f / %5.1f MiB  faults %d / %d\n",
          d, p, w, t, b / t / 1048576, cs, cr, ms, mr, fs, fr }' >&2
    done
  done
  awk -v d="$d" -v b="$want" '
    function median(a, n,   i, j, x) {
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { t[$1, $2] = $3; c[$2, "s", $1] = $4; c[$2, "r", $1] = $5; m[$2, "s", $1] = $6; m[$2, "r", $1] = $7; if ($1 > n) n = $1 }
    END {
      for (p = 1; p <= n; p++) {
        r[p] = t[p, "old"] / t[p, "new"]; o[p] = b / t[p, "old"] / 1048576; w[p] = b / t[p, "new"] / 1048576
        os[p] = c["old", "s", p]; or[p] = c["old", "r", p]; ns[p] = c["new", "s", p]; nr[p] = c["new", "r", p]
        xs[p] = m["old", "s", p] > m["new", "s", p] ? m["old", "s", p] : m["new", "s", p]
        xr[p] = m["old", "r", p] > m["new", "r", p] ? m["old", "r", p] : m["new", "r", p]
        ms = (p == 1 || m["old", "s", p] > ms) ? m["old", "s", p] : ms; mr = (p == 1 || m["old", "r", p] > mr) ? m["old", "r", p] : mr
        Ms = (p == 1 || m["new", "s", p] > Ms) ? m["new", "s", p] : Ms; Mr = (p == 1 || m["new", "r", p] > Mr) ? m["new", "r", p] : Mr
        lo = (p == 1 || r[p] < lo) ? r[p] : lo; hi = (p == 1 || r[p] > hi) ? r[p] : hi
      }
      printf "%-7s old %7.1f MiB/s (cpu %.2f / %.2f, peak rss %.0f / %.0f MiB)  new %7.1f MiB/s (cpu %.2f / %.2f, peak rss %.0f / %.0f MiB)  new/old %.3f (%.3f-%.3f)\n",
        d, median(o, n), median(os, n), median(or, n), ms, mr, median(w, n), median(ns, n), median(nr, n), Ms, Mr, median(r, n), lo, hi
    }' "$WORK/rows"
done
