#!/usr/bin/env bash
# Discovery on a DHT of many `pcp node`s at internet-like round trips (issue 16, item 3).
#
# NODES `pcp node`s, a sender and a receiver, each in its own network namespace behind
# its own delay line (examples/delay_line.rs, the one tests/wan.rs uses), all joined on
# one bridge. Host i draws RTT_i uniformly from 50..300 ms and its line delays every
# frame RTT_i/4 each way, so the round trip between hosts i and j is (RTT_i + RTT_j)/2,
# always within 50..300 ms. mDNS is off everywhere. Node 1 starts alone; every later
# node bootstraps from two earlier ones at random. Each round the sender bootstraps
# from one node and the receiver from another (chosen at random, never the same), with a
# fresh code (another first word, so another DHT key); the sender is started and its
# record advertised before the receiver starts.
#
# Measured per round, from the receiver's start: its first bootstrap node connected,
# the DHT lookup finding the sender (`peer_found`), and the authenticated offer
# (`offer`, right after key confirmation: dial, handshake, PAKE); and the sender's times
# from its start to its first bootstrap node connected and to its first publish ended
# (`advertised`, with whether the DHT reported it stored: `ok`). The receiver starts
# once that publish ended, stored everywhere or not. Prints each round and min / median /
# p90 / max per phase. Goal (issue 16): offer median <= 5 s, p90 <= 10 s.
#
# Round trips per phase: pcp logs each finished DHT query (`-v`: "DHT query finished",
# with the requests it sent, how many were answered, and how long it took), and the
# lookup's count so far when it finds a provider ("DHT provider found": the row
# `found`; the receiver stops its lookups there). A phase's
# round trips are its time over the mean round trip from that host to the others
# ((RTT_self + mean RTT_i) / 2): an estimate, since a query talks to many nodes at once
# (Kademlia's alpha = 3) and each first request to a node waits for a new connection.
# The dial and handshake (from `peer_found` to `offer`) are counted against the
# sender-receiver round trip itself.
#
#   benches/dht.sh                          # builds release pcp and the line; root
#   NODES=20 ROUNDS=3 benches/dht.sh        # smoke test
#
# Environment: NODES (50), ROUNDS (10), SEED (1), PCP and LINE (binaries; default:
# cargo build --release). Needs root, ip, ethtool.
#
# Nothing leaves the host: the script re-runs itself in a fresh network namespace with
# a private /run/netns; its namespaces have no default route, pcp runs with --no-mdns
# and only the local nodes as bootstrap.
set -euo pipefail
export LC_ALL=C

NODES=${NODES:-50}
ROUNDS=${ROUNDS:-10}
SEED=${SEED:-1}

if [ -z "${PCP_DHT_ISOLATED:-}" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "dht.sh: needs root (unshare, ip netns, ethtool)" >&2
    exit 2
  fi
  # The kernel's neighbour table is shared by every network namespace: 52 hosts on one
  # segment, each learning the others, pass the default gc_thresh3 (1024) and a host's
  # packets then fail with ENOBUFS. Raised (host-wide) if lower, and said.
  for knob in 1:1024 2:4096 3:8192; do
    key=net.ipv4.neigh.default.gc_thresh${knob%%:*}
    if [ "$(sysctl -n "$key")" -lt "${knob#*:}" ]; then
      echo "dht.sh: raising $key from $(sysctl -n "$key") to ${knob#*:}" >&2
      sysctl -qw "$key=${knob#*:}"
    fi
  done
  self=$(realpath "$0")
  cd "$(dirname "$self")/.."
  target=${CARGO_TARGET_DIR:-$PWD/target}
  if [ -z "${PCP:-}" ] || [ -z "${LINE:-}" ]; then
    cargo build --release --locked --quiet --bin pcp --example delay_line
  fi
  PCP=$(realpath "${PCP:-$target/release/pcp}")
  LINE=$(realpath "${LINE:-$target/release/examples/delay_line}")
  export PCP LINE PCP_DHT_ISOLATED=1
  exec unshare --net --mount --propagation private -- "$self" "$@"
fi

# ---- inside the isolated network and mount namespaces ----

RANDOM=$SEED
HOSTS=$((NODES + 2))
SENDER=$((NODES + 1))
RECEIVER=$((NODES + 2))
R=dht-r
HUB=dht-hub
WORK=$(mktemp -d -t pcp-dht.XXXXXX)

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  jobs -p | xargs -r kill 2>/dev/null || true
  for i in $(seq "$HOSTS"); do
    ip netns pids "dht-$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "dht-$i" 2>/dev/null || true
  done
  ip netns pids "$R" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$R" 2>/dev/null || true
  ip netns del "$HUB" 2>/dev/null || true
  umount -l "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p /run/netns
mount -t tmpfs -o mode=0755 pcp-dht-netns /run/netns
mount -t tmpfs -o mode=0700 pcp-dht "$WORK"

ip netns add "$R"
ip netns add "$HUB"
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
declare -A RTT
echo "dht.sh: $HOSTS hosts ($NODES nodes, a sender, a receiver), each behind its own delay line" >&2
for i in $(seq "$HOSTS"); do
  ns=dht-$i
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "a$i" netns "$R" type veth peer name eth0 netns "$ns"
  ip link add "b$i" netns "$R" type veth peer name "p$i" netns "$HUB"
  ip -n "$HUB" link set "p$i" master br0 up
  ip -n "$R" link set "a$i" up
  ip -n "$R" link set "b$i" up
  ip netns exec "$ns" ethtool -K eth0 tx off tso off gso off >/dev/null
  ip -n "$ns" addr add "198.18.$((i / 250)).$((i % 250 + 1))/16" dev eth0
  ip -n "$ns" link set eth0 up
  if [ -n "$(ip -n "$ns" route show default)" ]; then
    echo "dht.sh: namespace $ns has a default route" >&2
    exit 1
  fi
  RTT[$i]=$((50 + RANDOM % 251))
  quarter=$((RTT[$i] / 4))
  "$LINE" "$R" "a$i" "b$i" "$quarter" "$quarter" 2>/dev/null &
done

addr_of() { echo "198.18.$(($1 / 250)).$(($1 % 250 + 1))"; }

# pcp in host $1's namespace, with a clean environment.
pcp_in() {
  local i=$1; shift
  ip netns exec "dht-$i" env -u PCP_BOOTSTRAP -u PCP_NO_DHT -u PCP_NO_MDNS -u PCP_CODE "$PCP" "$@"
}

# wait_for FILE PATTERN SECONDS
wait_for() {
  local i
  for i in $(seq $(($3 * 100))); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.01
  done
  echo "dht.sh: timed out waiting for '$2' in $1:" >&2
  tail -20 "$1" >&2
  return 1
}

declare -A NODE
for i in $(seq "$NODES"); do
  boot=()
  if [ "$i" -gt 1 ]; then
    for _ in 1 2; do
      j=$((1 + RANDOM % (i - 1)))
      boot+=(--bootstrap "${NODE[$j]}")
    done
  fi
  pcp_in "$i" node --listen "/ip4/$(addr_of "$i")/tcp/4001" "${boot[@]}" \
    >"$WORK/node$i.out" 2>"$WORK/node$i.err" &
  wait_for "$WORK/node$i.out" /p2p/ 30
  NODE[$i]=$(grep -m1 /p2p/ "$WORK/node$i.out")
done
echo "dht.sh: $NODES nodes up; letting their routing tables fill for 20 s" >&2
sleep 20

WORDS=(abandon ability able about above absent absorb abstract absurd abuse access
  accident account accuse achieve acid acoustic acquire across act action actor)
head -c 1024 /dev/urandom >"$WORK/file"
: >"$WORK/rounds"

# stamp FILE: each line of stdin, prefixed with the time it was read.
stamp() { while IFS= read -r line; do echo "$EPOCHREALTIME $line"; done >"$1"; }

# first_at FILE PATTERN T0: seconds from T0 to the first line matching, or "-".
first_at() {
  local t
  t=$(grep -m1 -- "$2" "$1" | cut -d' ' -f1) || true
  if [ -z "$t" ]; then echo "-"; else awk -v a="$3" -v b="$t" 'BEGIN { printf "%.3f", b - a }'; fi
}

for round in $(seq "$ROUNDS"); do
  a=$((1 + RANDOM % NODES))
  b=$((1 + RANDOM % NODES))
  while [ "$b" -eq "$a" ]; do b=$((1 + RANDOM % NODES)); done
  code="${WORDS[$(((round - 1) % ${#WORDS[@]}))]}-enemy-result-increase"
  ts=$EPOCHREALTIME
  pcp_in "$SENDER" send -v --json --no-mdns --bootstrap "${NODE[$a]}" --code "$code" \
    --timeout 150 --listen "/ip4/$(addr_of "$SENDER")/tcp/4001" "$WORK/file" 2>&1 >/dev/null |
    stamp "$WORK/s$round" &
  spid=$!
  # Its first publish, whether or not the DHT took it everywhere (`ok`): a record
  # stored on some of the closest nodes can still be found.
  wait_for "$WORK/s$round" '"event":"advertised"' 120
  sboot=$(first_at "$WORK/s$round" '"connected":[1-9][0-9]*,"event":"bootstrap"' "$ts")
  adv=$(first_at "$WORK/s$round" '"event":"advertised"' "$ts")
  ok=$(grep -m1 '"event":"advertised"' "$WORK/s$round" | grep -q '"ok":true' && echo yes || echo no)
  t0=$EPOCHREALTIME
  pcp_in "$RECEIVER" receive -v --json -y --no-mdns --bootstrap "${NODE[$b]}" --timeout 120 \
    "$code" 2>&1 >/dev/null | stamp "$WORK/r$round" || true
  wait "$spid" || true
  boot=$(first_at "$WORK/r$round" '"connected":[1-9][0-9]*,"event":"bootstrap"' "$t0")
  found=$(first_at "$WORK/r$round" '"event":"peer_found"' "$t0")
  offer=$(first_at "$WORK/r$round" '"event":"offer"' "$t0")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$a" "$b" "$sboot" "$adv" "$boot" \
    "$found" "$offer" "$ok" >>"$WORK/rounds"
  # The first finished DHT query of each kind, "who phase requests answered ms", and
  # the receiver's lookup up to the provider it found (it stops there).
  for who in s r; do
    for q in bootstrap publish lookup found; do
      if [ "$q" = found ]; then
        line=$(grep -m1 "DHT provider found" "$WORK/$who$round" || true)
      else
        line=$(grep -m1 "DHT query finished.*query=.\?$q" "$WORK/$who$round" || true)
      fi
      [ -n "$line" ] || continue
      req=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
      ans=$(sed -n 's/.*answered=\([0-9]*\).*/\1/p' <<<"$line")
      ms=$(sed -n 's/.*ms=\([0-9]*\).*/\1/p' <<<"$line")
      echo "$who $q $req $ans $ms" >>"$WORK/queries"
    done
  done
  if [ "$found" != "-" ] && [ "$offer" != "-" ]; then
    awk -v f="$found" -v o="$offer" -v rtt="$(((RTT[$SENDER] + RTT[$RECEIVER]) / 2))" \
      'BEGIN { printf "%.1f\n", (o - f) * 1000 / rtt }' >>"$WORK/handshake"
  fi
  echo "dht.sh: round $round (sender via node $a, receiver via node $b, RTT to them" \
    "$(((RTT[$SENDER] + RTT[$a]) / 2)) / $(((RTT[$RECEIVER] + RTT[$b]) / 2)) ms):" \
    "sender: bootstrap $sboot, advertised $adv s (ok: $ok); receiver: bootstrap $boot," \
    "found $found, offer $offer s" >&2
done

echo
echo "$NODES pcp nodes, $ROUNDS rounds; host-to-host RTT 50..300 ms (sender $((RTT[$SENDER])) ms," \
  "receiver $((RTT[$RECEIVER])) ms draws); seconds"
echo
echo "| phase | min | median | p90 | max |"
echo "|---|---|---|---|---|"
for col in 4:sender_bootstrap 5:sender_advertised 6:receiver_bootstrap 7:receiver_found 8:receiver_offer; do
  n=${col%%:*}
  name=${col#*:}
  cut -f"$n" "$WORK/rounds" | { grep -v '^-$' || true; } | sort -n | awk -v name="$name" -v rounds="$ROUNDS" '
    { v[NR] = $1 }
    END {
      if (NR == 0) { printf "| %s | - | - | - | - |\n", name; exit }
      p90 = v[int(0.9 * NR + 0.999)]
      printf "| %s | %.2f | %.2f | %.2f | %.2f |%s\n", name, v[1], v[int((NR + 1) / 2)], p90, v[NR],
        (NR < rounds) ? sprintf(" (%d of %d rounds)", NR, rounds) : ""
    }'
done
echo
echo "publishes the DHT reported stored: $(cut -f9 "$WORK/rounds" | grep -c yes) of $ROUNDS"

# Round trips: each host's mean RTT to the others is (RTT_self + mean of all) / 2.
sum=0
for i in $(seq "$HOSTS"); do sum=$((sum + RTT[$i])); done
mean=$((sum / HOSTS))
echo
echo "DHT queries (first finished of each kind per round; medians; round trips = ms over the"
echo "host's mean RTT to the others, sender $(((RTT[$SENDER] + mean) / 2)) ms, receiver $(((RTT[$RECEIVER] + mean) / 2)) ms)"
echo
echo "| side | query | rounds | requests | answered | ms | ≈ round trips |"
echo "|---|---|---|---|---|---|---|"
touch "$WORK/queries"
for who in s r; do
  if [ "$who" = s ]; then host=$SENDER; side=sender; else host=$RECEIVER; side=receiver; fi
  for q in bootstrap publish lookup found; do
    awk -v who="$who" -v q="$q" -v side="$side" -v rtt="$(((RTT[$host] + mean) / 2))" '
      $1 == who && $2 == q { n++; req[n] = $3; ans[n] = $4; ms[n] = $5 }
      function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return a[int((n + 1) / 2)]
      }
      END {
        if (n == 0) exit
        m = median(ms, n)
        printf "| %s | %s | %d | %d | %d | %d | %.1f |\n", side, q, n, median(req, n), median(ans, n), m, m / rtt
      }' "$WORK/queries"
  done
done
if [ -s "$WORK/handshake" ]; then
  echo "| receiver | dial + handshake to the offer | $(wc -l <"$WORK/handshake") | - | - | - |" \
    "$(sort -n "$WORK/handshake" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }') (sender-receiver RTT $(((RTT[$SENDER] + RTT[$RECEIVER]) / 2)) ms) |"
fi
