#!/usr/bin/env bash
# pcp across a wide-area round trip, against the TLS pipe, in one run (issue 16, item 2).
#
# What it measures: for each link rate (RATES) and round trip (RTTS), the time from the
# receiver starting (the sender already listening) to the receiver exiting with every
# byte, for
#   tls    socat -b 131072 over OpenSSL TLS (throwaway self-signed cert): the baseline
#   pcp    pcp send / pcp receive -y over TCP (release build, default compression)
#   pcpq   the same over QUIC (the sender listens on quic-v1 only)
# on SIZE_MIB of random data and SIZE_MIB of compressible text (a deterministic tar of
# /usr/include and /usr/share). Every receiver writes to standard output into `wc -c`,
# which costs every tool the same and checks the length; pcp verifies every chunk
# itself (blake3, AEAD), the TLS pipe by its MAC. Tools run in interleaved rounds
# (tls, pcp, pcpq; PAIRS rounds), and each ratio is the median of the per-round
# ratios to the TLS pipe of that round, so drift on a shared machine hits both sides.
#
# The network: two hosts (198.18.0.1 sender, 198.18.0.2 receiver) joined through a
# router namespace that runs the project's delay line (examples/delay_line.rs, the one
# tests/wan.rs uses): every Ethernet frame is forwarded RTT/2 later in each direction.
# The hosts' veths have tx checksum offload, TSO and GSO off (the line forwards frames
# as they are). The sender's egress is held to the link rate by a token bucket (tc tbf).
# The kernel's TCP buffers are the namespace defaults (tcp_rmem max 6 MiB), for the TLS
# pipe and pcp's TCP alike: past 6 MiB in flight (1 Gbit/s at 50 ms and more) both are
# window-bound, which is what such a path gives an untuned host.
#
# Printed: per rate, RTT and data set, median MB/s per tool, pcp's ratios to the TLS
# pipe, the multiple of the link rate, and a markdown table for the README at the end.
#
#   benches/wan.sh                                   # builds release pcp and the line
#   SIZE_MIB=32 PAIRS=1 RTTS=100 RATES=100mbit benches/wan.sh   # smoke test
#
# Environment: SIZE_MIB (64), PAIRS (2), RTTS ("50 100 200", ms), RATES ("100mbit
# 1gbit"), DATASETS ("random text"), RUN_TIMEOUT (300 s per run), PCP and LINE (binaries; default: cargo build
# --release). Needs root, socat, openssl, ethtool, tc.
#
# Nothing leaves the host: the script re-runs itself in a fresh network namespace
# (only loopback) with a private /run/netns; its namespaces have no default route and
# pcp runs with --no-dht --no-mdns, dialling the other host's address only.
set -euo pipefail
export LC_ALL=C

SIZE_MIB=${SIZE_MIB:-64}
PAIRS=${PAIRS:-2}
RTTS=${RTTS:-50 100 200}
RATES=${RATES:-100mbit 1gbit}
DATASETS=${DATASETS:-random text}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}

if [ -z "${PCP_WAN_ISOLATED:-}" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "wan.sh: needs root (unshare, ip netns, tc, ethtool)" >&2
    exit 2
  fi
  for tool in socat openssl ethtool tc ip unshare timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "wan.sh: $tool is missing" >&2; exit 2; }
  done
  self=$(realpath "$0")
  cd "$(dirname "$self")/.."
  target=${CARGO_TARGET_DIR:-$PWD/target}
  if [ -z "${PCP:-}" ] || [ -z "${LINE:-}" ]; then
    cargo build --release --locked --quiet --bin pcp --example delay_line
  fi
  PCP=$(realpath "${PCP:-$target/release/pcp}")
  LINE=$(realpath "${LINE:-$target/release/examples/delay_line}")
  export PCP LINE PCP_WAN_ISOLATED=1
  exec unshare --net --mount --propagation private -- "$self" "$@"
fi

# ---- inside the isolated network and mount namespaces ----

SADDR=198.18.0.1
RADDR=198.18.0.2
R=wan-r
A=wan-s
B=wan-c
WORK=$(mktemp -d -t pcp-wan.XXXXXX)
LINE_PID=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$LINE_PID" ] && kill "$LINE_PID" 2>/dev/null
  for ns in "$A" "$B" "$R"; do
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
mount -t tmpfs -o mode=0755 pcp-wan-netns /run/netns
mount -t tmpfs -o mode=0700 pcp-wan "$WORK"
LOG=$WORK/log
mkdir -p "$WORK/data" "$LOG" "$WORK/tls"

for ns in "$R" "$A" "$B"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip link add a0 netns "$R" type veth peer name eth0 netns "$A"
ip link add b0 netns "$R" type veth peer name eth0 netns "$B"
ip -n "$A" addr add "$SADDR/24" dev eth0
ip -n "$B" addr add "$RADDR/24" dev eth0
for ns in "$A" "$B"; do
  ip netns exec "$ns" ethtool -K eth0 tx off tso off gso off >/dev/null
  ip -n "$ns" link set eth0 up
  if [ -n "$(ip -n "$ns" route show default)" ] || [ -n "$(ip -n "$ns" -6 route show default)" ]; then
    echo "wan.sh: namespace $ns has a default route" >&2
    exit 1
  fi
done
ip -n "$R" link set a0 up
ip -n "$R" link set b0 up

# line RTT_MS: (re)starts the delay line with RTT/2 each way.
line() {
  if [ -n "$LINE_PID" ]; then
    kill "$LINE_PID" 2>/dev/null || true
    wait "$LINE_PID" 2>/dev/null || true
  fi
  local half=$(($1 / 2))
  "$LINE" "$R" a0 b0 "$half" "$half" 2>"$LOG/line.err" &
  LINE_PID=$!
  # Until a ping crosses it: the line is up and ARP is done.
  for _ in $(seq 100); do
    ip netns exec "$A" ping -c 1 -W 1 "$RADDR" >/dev/null 2>&1 && return 0
  done
  echo "wan.sh: no ping across the delay line" >&2
  cat "$LOG/line.err" >&2
  exit 1
}

# shape RATE: the sender's egress held to RATE.
shape() {
  local burst=256kb
  [ "$1" = 1gbit ] && burst=1mb
  ip netns exec "$A" tc qdisc replace dev eth0 root tbf rate "$1" burst "$burst" latency 50ms
}

echo "wan.sh: making the data sets ($SIZE_MIB MiB each) in $WORK (tmpfs)" >&2
head -c "${SIZE_MIB}M" /dev/urandom >"$WORK/data/random"
: >"$WORK/data/text"
want=$((SIZE_MIB << 20))
while [ "$(stat -c %s "$WORK/data/text")" -lt "$want" ]; do
  have=$(stat -c %s "$WORK/data/text")
  (tar c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    /usr/include /usr/share 2>/dev/null | head -c $((want - have)) >>"$WORK/data/text") || true
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=pcp-wan -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null

PORT=21000
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# run_one TOOL DATA PORT: one transfer; prints its seconds.
run_one() {
  local tool=$1 data=$2 f=$WORK/data/$2 PORT=$3
  local scmd rcmd
  local tls="cert=$WORK/tls/cert.pem,key=$WORK/tls/key.pem,verify=0"
  case $tool in
    tls)
      scmd="exec socat -b 131072 -u FILE:$f OPENSSL-LISTEN:$PORT,bind=$SADDR,reuseaddr,$tls"
      rcmd="socat -b 131072 -u OPENSSL:$SADDR:$PORT,verify=0 STDOUT"
      ;;
    pcp | pcpq)
      local addr=/ip4/$SADDR/tcp/$PORT
      [ "$tool" = pcpq ] && addr=/ip4/$SADDR/udp/$PORT/quic-v1
      scmd="exec $PCP send --no-dht --no-mdns --listen $addr $f"
      rcmd="$PCP receive -y --no-dht --no-mdns --peer $addr"
      ;;
  esac
  : >"$LOG/s.err"
  ip netns exec "$A" env PCP_CODE=bubble-enemy-result-increase \
    timeout "$RUN_TIMEOUT" sh -c "$scmd" </dev/null >/dev/null 2>"$LOG/s.err" &
  local spid=$!
  local ready=
  for _ in $(seq 2000); do
    if [ "$tool" = tls ]; then
      [ -n "$(ip netns exec "$A" ss -Hltn "sport = :$PORT")" ] && ready=1 && break
    else
      grep -q '^Ready:' "$LOG/s.err" 2>/dev/null && ready=1 && break
    fi
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.01
  done
  if [ -z "$ready" ]; then
    echo "wan.sh: the $tool sender did not get ready:" >&2
    cat "$LOG/s.err" >&2
    exit 1
  fi
  local t0=$EPOCHREALTIME t1 got rc=0
  got=$(ip netns exec "$B" env PCP_CODE=bubble-enemy-result-increase \
    timeout "$RUN_TIMEOUT" sh -c "$rcmd" </dev/null 2>"$LOG/r.err" | wc -c) || rc=$?
  t1=$EPOCHREALTIME
  wait "$spid" || rc=$?
  if [ "$rc" -ne 0 ] || [ "$got" -ne "$(stat -c %s "$f")" ]; then
    echo "wan.sh: $tool/$data failed (status $rc, $got bytes)" >&2
    echo "--- sender:" >&2; cat "$LOG/s.err" >&2
    echo "--- receiver:" >&2; cat "$LOG/r.err" >&2
    exit 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

for rate in $RATES; do
  shape "$rate"
  for rtt in $RTTS; do
    line "$rtt"
    for data in $DATASETS; do
      for pair in $(seq "$PAIRS"); do
        for tool in tls pcp pcpq; do
          PORT=$((PORT + 1))
          secs=$(run_one "$tool" "$data" "$PORT")
          printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rate" "$rtt" "$data" "$pair" "$tool" "$secs" >>"$RESULTS"
          echo "wan.sh: $rate rtt ${rtt}ms $data round $pair $tool: $secs s" >&2
        done
      done
    done
  done
done

# ---- report ----

bytes=$((SIZE_MIB << 20))
echo
echo "SIZE_MIB=$SIZE_MIB PAIRS=$PAIRS, receivers into wc -c; MB/s = 10^6 bytes/s (median of rounds)"
echo
echo "| link | RTT | data | TLS pipe MB/s | pcp TCP MB/s (×TLS) | pcp QUIC MB/s (×TLS) | pcp TCP × link |"
echo "|---|---|---|---|---|---|---|"
awk -F'\t' -v bytes="$bytes" '
  function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  {
    k = $1 SUBSEP $2 SUBSEP $3
    if (!(k in seen)) { seen[k] = 1; order[++n] = k }
    t[k, $4, $5] = $6
    pairs[k] = ($4 > pairs[k]) ? $4 : pairs[k]
  }
  END {
    for (i = 1; i <= n; i++) {
      k = order[i]; split(k, f, SUBSEP)
      rt = ""; rp = ""; rq = ""; xp = ""; xq = ""
      for (p = 1; p <= pairs[k]; p++) {
        rt = rt " " bytes / t[k, p, "tls"] / 1e6
        rp = rp " " bytes / t[k, p, "pcp"] / 1e6
        rq = rq " " bytes / t[k, p, "pcpq"] / 1e6
        xp = xp " " t[k, p, "tls"] / t[k, p, "pcp"]
        xq = xq " " t[k, p, "tls"] / t[k, p, "pcpq"]
      }
      link = (f[1] == "1gbit") ? 125 : (f[1] == "100mbit" ? 12.5 : 0)
      mp = median(rp)
      printf "| %s | %s ms | %s | %.1f | %.1f (%.2f×) | %.1f (%.2f×) | %s |\n",
        f[1], f[2], f[3], median(rt), mp, median(xp), median(rq), median(xq),
        link ? sprintf("%.2f×", mp / link) : "-"
    }
  }' "$RESULTS"
