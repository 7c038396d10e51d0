#!/usr/bin/env bash
# pcp against the pipes any Debian machine has, end to end, in one run.
#
# What it measures: for each data set, the time from the receiver starting (the sender
# already listening) to the receiver exiting with everything written, for
#   nc     plain TCP pipe (netcat-openbsd), no encryption: the wire's ceiling
#   tls    socat -b 131072 over OpenSSL TLS (throwaway self-signed cert): the
#          encrypted-pipe ceiling, the baseline every ratio is taken against
#   ztls   zstd -1 | socat TLS | zstd -d: an encrypted, compressed pipe
#   pcp    pcp send / pcp receive -y (release build, default compression: adapts, none to zstd 6)
# on the same data and the same two network namespaces joined by one veth pair
# (198.18.0.1 sender, 198.18.0.2 receiver). The tools run in interleaved rounds
# (nc, tls, ztls, then pcp; PAIRS rounds per data set), and each tool's ratio to the
# TLS pipe is the median of the per-round ratios, so slow drift on a shared machine
# hits both sides of a ratio alike.
#
# Data sets (all in a tmpfs, so no disk is measured):
#   random   SIZE_MIB of /dev/urandom, file -> receiver's stdout
#   text     SIZE_MIB of compressible text: a deterministic tar of /usr/include and
#            /usr/share (--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner),
#            repeated if shorter and cut with head -c; file -> receiver's stdout
#   stdin    the random data piped in (pcp send -, size unknown) -> receiver's stdout
#   file     the random data, file -> pcp receive -o FILE (baselines: > FILE) in tmpfs
#   tree     /usr/include + /usr/share/doc regular files (about 12,000; TREE_FILES
#            caps the count), pcp send DIR -> pcp receive -C DIR, against
#            tar c | pipe | tar x, into a tmpfs
#   shaped   random and text again (SHAPED_MIB each), with the sender's egress held to
#            SHAPED_MBIT (tc tbf on its veth); rates are also given as a multiple of the
#            link rate. nc is left out there: on a held link it is the TLS pipe.
# Receivers to "stdout" pipe into b3sum (or sha256sum), which is also how every output
# is verified; the file and tree outputs are hashed after the run. Any mismatch, or any
# side failing, stops the script with status 1.
#
# Printed per data set: median MiB/s per tool, the median ratio to the TLS pipe, CPU
# seconds (user+sys) and peak RSS per side (GNU time; for a pipeline, CPU of all its
# processes and the RSS of the largest), and the transport. A markdown table for the
# README comes at the end. The digest process on the receiving side is outside the
# per-side CPU figures but inside the wall time, for every tool alike.
#
# As root (ip netns, tc, mount):
#   benches/compare.sh                                 # full run (builds release first)
#   SIZE_MIB=64 PAIRS=2 TREE_FILES=500 SHAPED_MIB=16 benches/compare.sh   # smoke test
#   PCP=target/release/pcp CASES="random tree" benches/compare.sh
#
# Environment: SIZE_MIB (1024), PAIRS (5), TREE_FILES (0 = all), SHAPED_MIB (256),
# SHAPED_MBIT (100), CASES ("random text stdin file tree shaped"), RUN_TIMEOUT (600 s,
# per tool run), TOTAL_TIMEOUT (10800 s, the whole run), QUIC (non-empty: also pcp over
# QUIC, as pcpq), SINK (verify: stdout into b3sum, as above; null: stdout into `wc -c`,
# which checks only the length and costs every tool next to nothing, so that on this
# 2-core box the digest's CPU does not pull every ratio toward 1; pcp still verifies
# every chunk itself, the TLS pipe by its MAC), PCP (a pcp binary; default:
# cargo build --release --locked). Memory: the data sets and outputs live in RAM,
# about 3 * SIZE_MIB + 2 * SHAPED_MIB + 0.5 GiB at the peak.
#
# Nothing leaves the host: after the build the script re-runs itself in a fresh network
# namespace (only loopback, down) with a private mount namespace, where /run/netns is a
# private tmpfs; its two namespaces have no default route and only the veth between
# them; pcp runs with --no-dht --no-mdns, listening on and dialling the veth address
# only. Cleanup (trap) kills everything in the namespaces and removes the temp dir; a
# killed run leaves at most an empty directory under /tmp. Not part of `cargo bench`.
set -euo pipefail
export LC_ALL=C # one decimal point for date, awk and EPOCHREALTIME

SIZE_MIB=${SIZE_MIB:-1024}
PAIRS=${PAIRS:-5}
TREE_FILES=${TREE_FILES:-0}
SHAPED_MIB=${SHAPED_MIB:-256}
SHAPED_MBIT=${SHAPED_MBIT:-100}
CASES=${CASES:-random text stdin file tree shaped}
SINK=${SINK:-verify}
QUIC=${QUIC:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
TOTAL_TIMEOUT=${TOTAL_TIMEOUT:-10800}

if [ -z "${PCP_COMPARE_ISOLATED:-}" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "compare.sh: needs root (unshare, ip netns, tc, mount)" >&2
    exit 2
  fi
  missing=()
  need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
  need socat socat
  need nc netcat-openbsd
  need zstd zstd
  need openssl openssl
  need tar tar
  need ip iproute2
  need tc iproute2
  need ss iproute2
  need unshare util-linux
  need timeout coreutils
  [ -x /usr/bin/time ] || missing+=(time)
  if command -v nc >/dev/null 2>&1 && ! nc -h 2>&1 | grep -q OpenBSD; then
    echo "compare.sh: nc is not OpenBSD netcat (it needs -N and -d)" >&2
    missing+=(netcat-openbsd)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "compare.sh: missing tools; install them with:" >&2
    echo "  apt-get install $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')" >&2
    exit 2
  fi
  if ! command -v b3sum >/dev/null 2>&1; then
    echo "compare.sh: b3sum is missing (apt-get install b3sum, or cargo install b3sum);" \
      "verifying with sha256sum, which is slower and costs the receivers' CPU" >&2
  fi
  self=$(realpath "$0")
  if [ -n "${PCP:-}" ]; then PCP=$(realpath "$PCP"); fi
  cd "$(dirname "$self")/.."
  if [ -z "${PCP:-}" ]; then
    cargo build --release --locked --quiet
    PCP=${CARGO_TARGET_DIR:-$PWD/target}/release/pcp
  fi
  [ -x "$PCP" ] || { echo "compare.sh: $PCP is not executable" >&2; exit 2; }
  export PCP PCP_COMPARE_ISOLATED=1
  # timeout signals its whole process group, so the trap below still cleans up.
  exec timeout "$TOTAL_TIMEOUT" unshare --net --mount --propagation private -- "$self" "$@"
fi

# ---- inside the isolated network and mount namespaces ----

DIGEST=sha256sum
command -v b3sum >/dev/null 2>&1 && DIGEST=b3sum
SADDR=198.18.0.1
RADDR=198.18.0.2
A=cmp-send
B=cmp-recv
WORK=$(mktemp -d -t pcp-compare.XXXXXX)

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
mount -t tmpfs -o mode=0755 pcp-compare-netns /run/netns
mount -t tmpfs -o mode=0700 pcp-compare "$WORK"
DATA=$WORK/data
RX=$WORK/rx
LOG=$WORK/log
mkdir -p "$DATA" "$RX" "$LOG" "$WORK/tls"

ip netns add "$A"
ip netns add "$B"
ip link add veth-s netns "$A" type veth peer name veth-r netns "$B"
ip -n "$A" addr add "$SADDR/24" dev veth-s
ip -n "$B" addr add "$RADDR/24" dev veth-r
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set veth-s up
ip -n "$B" link set veth-r up
for ns in "$A" "$B"; do
  # Only the on-link /24: a packet for anywhere else has no route.
  if [ -n "$(ip -n "$ns" route show default)" ] || [ -n "$(ip -n "$ns" -6 route show default)" ]; then
    echo "compare.sh: namespace $ns has a default route" >&2
    exit 1
  fi
done

# ---- data ----

echo "compare.sh: making the data sets in $WORK (tmpfs)" >&2
head -c "${SIZE_MIB}M" /dev/urandom >"$DATA/random"
: >"$DATA/text"
want=$((SIZE_MIB << 20))
while :; do
  have=$(stat -c %s "$DATA/text")
  [ "$have" -lt "$want" ] || break
  # head closes the pipe early, so tar may die of SIGPIPE: that is the cut.
  (tar c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    /usr/include /usr/share 2>/dev/null | head -c $((want - have)) >>"$DATA/text") || true
  if [ "$(stat -c %s "$DATA/text")" -eq "$have" ]; then
    echo "compare.sh: tar of /usr/include /usr/share produced nothing" >&2
    exit 1
  fi
done
mkdir "$DATA/tree"
find /usr/include /usr/share/doc -type f -print0 | sort -z >"$WORK/tree.list"
[ "$TREE_FILES" -gt 0 ] || TREE_FILES=$(tr -cd '\0' <"$WORK/tree.list" | wc -c)
head -z -n "$TREE_FILES" "$WORK/tree.list" | tar c --null --files-from=- 2>/dev/null |
  tar x -C "$DATA/tree"
TREE_N=$(find "$DATA/tree" -type f | wc -l)
TREE_BYTES=$(find "$DATA/tree" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
[ "$SHAPED_MIB" -le "$SIZE_MIB" ] || SHAPED_MIB=$SIZE_MIB
head -c "${SHAPED_MIB}M" "$DATA/random" >"$DATA/random-shaped"
head -c "${SHAPED_MIB}M" "$DATA/text" >"$DATA/text-shaped"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=pcp-compare -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null

digest_of() { "$DIGEST" <"$1" | cut -d' ' -f1; }
SINK_CMD=$DIGEST
[ "$SINK" = null ] && SINK_CMD="wc -c"

# A tree's identity: every entry's type, mode and size, and every file's bytes.
tree_digest() {
  (
    cd "$1"
    find . -mindepth 1 -printf '%y %m %s %P\n' | sort
    find . -type f -print0 | sort -z | xargs -0 -r "$DIGEST"
  ) | "$DIGEST" | cut -d' ' -f1
}

declare -A WANT
for f in random text random-shaped text-shaped; do WANT[$f]=$(digest_of "$DATA/$f"); done
WANT[tree]=$(tree_digest "$DATA/tree")

# ---- one run ----

PORT=20000
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# wait_ready SENDER-PID TOOL PORT: until the sender listens (pcp: its "Ready:" line on
# stderr; the pipes: a listening socket), 20 s at most.
wait_ready() {
  local pid=$1 tool=$2 port=$3
  for _ in $(seq 2000); do
    if [ "$tool" = pcp ] || [ "$tool" = pcpq ]; then
      grep -q '^Ready:' "$LOG/s.err" 2>/dev/null && return 0
    else
      [ -n "$(ip netns exec "$A" ss -Hltn "sport = :$port")" ] && return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  echo "compare.sh: the $tool sender did not get ready; its stderr:" >&2
  cat "$LOG/s.err" >&2
  return 1
}

# run_one CASE TOOL PAIR: one transfer, checked, appended to $RESULTS.
# CASE decides the source (file, stdin or tree), the sink (digest, -o file or -C dir)
# and the data; TOOL the pipe.
run_one() {
  local case=$1 tool=$2 pair=$3
  local src sink data bytes
  case $case in
    random | text) src=file sink=digest data=$case ;;
    random@* | text@*) src=file sink=digest data=${case%@*}-shaped ;;
    stdin) src=stdin sink=digest data=random ;;
    file) src=file sink=file data=random ;;
    tree) src=tree sink=tree data=tree ;;
  esac
  if [ "$data" = tree ]; then bytes=$TREE_BYTES; else bytes=$(stat -c %s "$DATA/$data"); fi
  PORT=$((PORT + 1))
  rm -rf "$RX" && mkdir "$RX"
  local f=$DATA/$data out=$RX/out
  local tls="cert=$WORK/tls/cert.pem,key=$WORK/tls/key.pem,verify=0"
  local scmd rcmd net_s net_r
  case $tool in
    nc)
      net_s="nc -N -l $SADDR $PORT"
      net_r="nc -d $SADDR $PORT"
      ;;
    tls | ztls)
      net_s="socat -b 131072 -u STDIN OPENSSL-LISTEN:$PORT,bind=$SADDR,reuseaddr,$tls"
      net_r="socat -d -d -b 131072 -u OPENSSL:$SADDR:$PORT,verify=0 STDOUT"
      ;;
  esac
  if [ "$tool" = pcp ] || [ "$tool" = pcpq ]; then
    local common="--no-dht --no-mdns" addr=/ip4/$SADDR/tcp/$PORT
    [ "$tool" = pcpq ] && addr=/ip4/$SADDR/udp/$PORT/quic-v1
    case $src in
      file) scmd="exec $PCP send $common --listen $addr $f" ;;
      stdin) scmd="cat $f | $PCP send $common --listen $addr -" ;;
      tree) scmd="exec $PCP send $common --listen $addr $DATA/tree" ;;
    esac
    # --json: the done event names the transport that carried the data.
    rcmd="exec $PCP receive -y --json $common --peer $addr"
    case $sink in
      file) rcmd="$rcmd -o $out" ;;
      tree) rcmd="$rcmd -C $RX" ;;
    esac
  else
    local z_s="" z_r=""
    if [ "$tool" = ztls ]; then z_s="zstd -1 -q -c |" z_r="| zstd -d -q -c"; fi
    case $src in
      file) scmd="$z_s $net_s" ;;
      stdin) scmd="cat $f | $z_s $net_s" ;;
      tree) scmd="tar c -C $DATA tree | $z_s $net_s" ;;
    esac
    rcmd="$net_r $z_r"
    case $sink in
      file) rcmd="$rcmd > $out" ;;
      tree) rcmd="$rcmd | tar x -C $RX" ;;
    esac
  fi
  local time_fmt='%e %U %S %M' sin=/dev/null
  if [ "$src" = file ]; then sin=$f; fi # the pipes read it there; pcp ignores it
  : >"$LOG/s.err"
  ip netns exec "$A" env PCP_CODE=bubble-enemy-result-increase \
    /usr/bin/time -f "$time_fmt" -o "$LOG/s.time" timeout "$RUN_TIMEOUT" sh -c "$scmd" \
    <"$sin" >/dev/null 2>"$LOG/s.err" &
  local spid=$! rc=0 src_rc=0
  wait_ready "$spid" "$tool" "$PORT" || { kill "$spid" 2>/dev/null; wait "$spid" || true; return 1; }
  local t0=$EPOCHREALTIME t1
  ip netns exec "$B" env PCP_CODE=bubble-enemy-result-increase \
    /usr/bin/time -f "$time_fmt" -o "$LOG/r.time" timeout "$RUN_TIMEOUT" sh -c "$rcmd" \
    </dev/null 2>"$LOG/r.err" | $SINK_CMD >"$LOG/r.sum" || rc=$?
  t1=$EPOCHREALTIME
  wait "$spid" || src_rc=$?
  if [ "$rc" -ne 0 ] || [ "$src_rc" -ne 0 ]; then
    echo "compare.sh: $case/$tool failed (receiver $rc, sender $src_rc)" >&2
    echo "--- sender: $scmd" >&2; cat "$LOG/s.err" >&2
    echo "--- receiver: $rcmd" >&2; cat "$LOG/r.err" >&2
    return 1
  fi
  local got
  case $sink in
    digest) got=$(cut -d' ' -f1 "$LOG/r.sum") ;;
    file) got=$(digest_of "$out") ;;
    tree) got=$(tree_digest "$RX/tree") ;;
  esac
  local want=${WANT[$data]}
  if [ "$SINK" = null ] && [ "$sink" = digest ]; then want=$bytes; fi
  if [ "$got" != "$want" ]; then
    echo "compare.sh: $case/$tool pair $pair: the receiver's output differs from the data" >&2
    exit 1
  fi
  if [ -z "${CIPHER:-}" ] && [ "$tool" = tls ]; then
    CIPHER=$(sed -n 's/.*SSL connection using \([^ ]*\).*/\1/p;T;q' "$LOG/r.err")
  fi
  local s r transport=tcp
  if [ "$tool" = pcp ] || [ "$tool" = pcpq ]; then
    transport=$(sed -n 's/.*"event":"done".*"transport":"\([a-z]*\)".*/\1/p' "$LOG/r.err" | tail -1)
    [ -n "$transport" ] || transport=$(sed -n 's/.*"transport":"\([a-z]*\)".*"event":"done".*/\1/p' "$LOG/r.err" | tail -1)
    [ -n "$transport" ] || transport=unknown
  fi
  read -r -a s < <(tail -1 "$LOG/s.time")
  read -r -a r < <(tail -1 "$LOG/r.time")
  awk -v c="$case" -v t="$tool" -v p="$pair" -v b="$bytes" -v t0="$t0" -v t1="$t1" -v tr="$transport" \
    -v su="${s[1]}" -v ss="${s[2]}" -v sm="${s[3]}" -v ru="${r[1]}" -v rs="${r[2]}" -v rm="${r[3]}" \
    'BEGIN { printf "%s\t%s\t%d\t%d\t%.6f\t%.2f\t%d\t%.2f\t%d\t%s\n", c, t, p, b, t1 - t0, su + ss, sm, ru + rs, rm, tr }' \
    >>"$RESULTS"
  tail -1 "$RESULTS" | awk -F'\t' '{ printf "  %-14s pair %d  %-5s %8.3f s  %8.1f MiB/s\n", $1, $3, $2, $5, $4 / $5 / 1048576 }' >&2
}

# ---- summaries ----

MD=$WORK/table.md
MD_SHAPED=$WORK/table-shaped.md
printf '| data set | tool | MiB/s | × TLS pipe | CPU s send / recv | peak RSS MiB send / recv | transport |\n' >"$MD"
printf '|---|---|--:|--:|--:|--:|---|\n' >>"$MD"
printf '| data set (%s Mbit/s link) | tool | MiB/s | × link rate | × TLS pipe |\n' "$SHAPED_MBIT" >"$MD_SHAPED"
printf '|---|---|--:|--:|--:|\n' >>"$MD_SHAPED"

# summarize CASE LABEL TOOLS...: medians per tool; the ratio is the median over pairs
# of (TLS pipe's seconds / tool's seconds) on the same data in the same round.
summarize() {
  local case=$1 label=$2; shift 2
  local link=0
  case $case in *@*) link=$((SHAPED_MBIT * 1000000 / 8)) ;; esac
  echo
  echo "== $label ($PAIRS pairs)"
  printf '%-6s %9s %8s %s %13s %14s %16s  %s\n' tool "MiB/s" "x TLS" \
    "$([ "$link" -gt 0 ] && echo '  x link' || echo '')" "CPU s send" "CPU s recv" "RSS MiB s / r" transport
  local tool
  for tool in "$@"; do
    awk -F'\t' -v c="$case" -v t="$tool" -v link="$link" -v label="$label" \
      -v md="$MD" -v mds="$MD_SHAPED" '
      function median(a, n,   i, j, x) {
        for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      $1 == c && $2 == "tls" { tls[$3] = $5 }
      $1 == c && $2 == t { n++; secs[$3] = $5; rate[n] = $4 / $5; scpu[n] = $6; srss[n] = $7; rcpu[n] = $8; rrss[n] = $9
        if (!($10 in seen)) { seen[$10] = 1; tr = tr (tr == "" ? "" : "+") $10 } }
      END {
        if (n == 0) exit
        m = 0
        for (p in secs) if (p in tls) ratio[++m] = tls[p] / secs[p]
        mr = median(rate, n); x = m ? median(ratio, m) : 0
        sc = median(scpu, n); rc = median(rcpu, n); sr = median(srss, n) / 1024; rr = median(rrss, n) / 1024
        printf "%-6s %9.1f %8.2f %s %13.2f %14.2f %9.0f / %-5.0f  %s\n", t, mr / 1048576, x,
          (link ? sprintf("%8.2f", mr / link) : ""), sc, rc, sr, rr, tr
        if (link)
          printf "| %s | %s | %.0f | %.2f | %.2f |\n", label, t, mr / 1048576, mr / link, x >> mds
        else
          printf "| %s | %s | %.0f | %.2f | %.2f / %.2f | %.0f / %.0f | %s |\n", label, t, mr / 1048576, x, sc, rc, sr, rr, tr >> md
      }' "$RESULTS"
  done
}

# run_case CASE LABEL TOOLS...: PAIRS interleaved rounds, then the summary.
run_case() {
  local case=$1 label=$2; shift 2
  local pair tool
  for pair in $(seq "$PAIRS"); do
    for tool in "$@"; do
      run_one "$case" "$tool" "$pair"
    done
  done
  summarize "$case" "$label" "$@"
}

# ---- the run ----

echo "pcp compare: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p;T;q' /proc/cpuinfo)), linux $(uname -r)"
echo "pcp: $PCP ($("$PCP" --version)), --no-dht --no-mdns, TCP only (--listen / --peer)"
echo "data: ${SIZE_MIB} MiB random and text; tree of $TREE_N files, $((TREE_BYTES >> 20)) MiB; stdout sinks: $SINK_CMD"
echo "pairs: $PAIRS per data set; ratios are medians of per-round ratios to the TLS pipe (tls)"

PCPS=pcp
[ -n "$QUIC" ] && PCPS="pcp pcpq"
for c in $CASES; do
  case $c in
    random) run_case random "random, file → stdout" nc tls ztls $PCPS ;;
    text) run_case text "text, file → stdout" nc tls ztls $PCPS ;;
    stdin) run_case stdin "random, stdin → stdout" nc tls ztls $PCPS ;;
    file) run_case file "random, file → -o file (tmpfs)" nc tls ztls $PCPS ;;
    tree) run_case tree "tree of $TREE_N files ($((TREE_BYTES >> 20)) MiB) → -C dir (tmpfs)" nc tls ztls $PCPS ;;
    shaped)
      # tbf segments GSO packets bigger than its bucket, so 256 kB keeps veth's 64 KiB
      # super-packets whole; 50 ms of queue is a modest router buffer at this rate.
      ip netns exec "$A" tc qdisc replace dev veth-s root tbf rate "${SHAPED_MBIT}mbit" \
        burst 256kb latency 50ms
      run_case "random@$SHAPED_MBIT" "random ${SHAPED_MIB} MiB, ${SHAPED_MBIT} Mbit/s" tls ztls $PCPS
      run_case "text@$SHAPED_MBIT" "text ${SHAPED_MIB} MiB, ${SHAPED_MBIT} Mbit/s" tls ztls $PCPS
      ip netns exec "$A" tc qdisc del dev veth-s root
      ;;
    *) echo "compare.sh: unknown case '$c'" >&2; exit 2 ;;
  esac
done

echo
echo "TLS pipe cipher: ${CIPHER:-unknown}; ztls is zstd -1 (one thread); pcp adapts its zstd level (none to 6) to the link."
echo "transport: what pcp's --json done event named (the pipes are TCP); pcp listens on and dials"
echo "one TCP address (QUIC=1 adds pcpq, the same over one QUIC address)."
echo
echo "Markdown (for the README):"
echo
cat "$MD"
if [ "$(wc -l <"$MD_SHAPED")" -gt 2 ]; then
  echo
  cat "$MD_SHAPED"
fi
