#!/bin/sh
# bench/peers.sh [ROUNDS] [SECONDS]: labs across hosts (issue 20), in one run:
#  1. TCP throughput (iperf3, SECONDS per round) and RTT (ping) client A -> client B
#     - "wg":   two labnet labs on two simulated hosts (namespaces joined by a veth
#               underlay), joined by `peer invite`/`peer add`: client A -> lab A -> the
#               peering link (wireguard-go on host A) -> UDP over the underlay -> wireguard-go
#               on host B -> lab B -> client B;
#     - "veth": the same hops without WireGuard: client A -> router A -> veth -> router B ->
#               client B, routed, no tunnel;
#     rounds interleaved (wg, veth, wg, veth, ...);
#  2. `labnet peer add` -> the first ping reply through the new tunnel (host B already has A
#     as a peer): a 10 ms ping from client A runs while `peer add` applies B live on lab A.
# Root; needs iperf3, wireguard-go, nft, a built labnet (LABNET, default target/debug/labnet:
# labnet is not on the data path). Names start with lpbn; everything is removed at the end.
set -eu
ROUNDS=${1:-3}
SECS=${2:-5}
LABNET=$(realpath "${LABNET:-target/debug/labnet}")
P=lpbn
D=$(mktemp -d /tmp/lpbn.XXXXXX)
HA=${P}ha HB=${P}hb LA=${P}a LB=${P}b CA=${P}ca CB=${P}cb
VA=${P}ra VB=${P}rb VCA=${P}xa VCB=${P}xb

lab() { # HOST LABNET-ARGS...
  h=$1; shift
  side=${h#${P}h}
  env LABNET_RUN_DIR=$D/$side/run LABNET_STATE_DIR=$D/$side/state LABNET_CONFIG_DIR=$D/$side/etc \
    nsenter --net=/run/netns/$h "$LABNET" "$@"
}

cleanup() {
  set +e
  lab $HA down $LA >/dev/null 2>&1
  lab $HB down $LB >/dev/null 2>&1
  for n in $CA $CB $HA $HB $VA $VB $VCA $VCB; do ip netns del $n 2>/dev/null; done
  [ -n "${srv:-}" ] && kill $srv 2>/dev/null
  rm -rf "$D"
}
trap cleanup EXIT INT TERM

# ---- two hosts with labnet labs
ip netns add $HA; ip netns add $HB
ip -n $HA link set lo up; ip -n $HB link set lo up
ip -n $HA link add ${P}ua type veth peer name ${P}ub netns $HB
ip -n $HA addr add 10.66.0.1/30 dev ${P}ua; ip -n $HB addr add 10.66.0.2/30 dev ${P}ub
ip -n $HA link set ${P}ua up; ip -n $HB link set ${P}ub up
for side in a b; do
  net=192.168.1$([ $side = a ] && echo 0 || echo 1)
  ip=10.66.0.$([ $side = a ] && echo 1 || echo 2)
  mkdir -p $D/$side/etc
  cat >$D/$side/etc/$P$side.toml <<EOF
name = "$P$side"
[bridge]
name = "${P}b$side"
address = "$net.1/24"
[peering]
interface = "${P}p$side"
listen_port = 51820
endpoint = "$ip:51820"
EOF
done
lab $HA up $LA >/dev/null
lab $HB up $LB >/dev/null
client() { # NS LAB BRIDGE ADDR GW
  ip netns add $1; ip -n $1 link set lo up
  ip -n $1 link add ${1}c type veth peer name ${1}p netns $2
  ip -n $2 link set ${1}p master $3 up
  ip -n $1 addr add $4/24 dev ${1}c; ip -n $1 link set ${1}c up
  ip -n $1 route add default via $5
}
client $CA $LA ${P}ba 192.168.10.50 192.168.10.1
client $CB $LB ${P}bb 192.168.11.50 192.168.11.1
lab $HB peer invite $LB --out $D/b.invite >/dev/null
lab $HA peer invite $LA --out $D/a.invite >/dev/null
lab $HB peer add $D/a.invite --lab $LB >/dev/null

# ---- 2. peer add -> first packet (lab B already has A; A learns B now)
ip netns exec $CA ping -D -n -i 0.01 -c 1500 -W 1 192.168.11.50 >$D/ping-add.txt 2>&1 &
pinger=$!
sleep 0.3
t0=$(date +%s.%N)
lab $HA peer add $D/b.invite --lab $LA >/dev/null
t1=$(date +%s.%N)
wait $pinger || true
first=$(awk '/bytes from/ { gsub(/[\[\]]/, "", $1); print $1; exit }' $D/ping-add.txt)
[ -n "$first" ] || { echo "no reply through the new tunnel" >&2; cat $D/ping-add.txt >&2; exit 1; }
add_ms=$(echo "($t1 - $t0) * 1000" | bc -l)
first_ms=$(echo "($first - $t0) * 1000" | bc -l)

# ---- the veth-only path: the same hops, routed, no tunnel
ip netns add $VCA; ip netns add $VA; ip netns add $VB; ip netns add $VCB
for n in $VCA $VA $VB $VCB; do ip -n $n link set lo up; done
ip -n $VCA link add ${P}1 type veth peer name ${P}2 netns $VA
ip -n $VA link add ${P}3 type veth peer name ${P}4 netns $VB
ip -n $VB link add ${P}5 type veth peer name ${P}6 netns $VCB
ip -n $VCA addr add 192.168.30.50/24 dev ${P}1; ip -n $VA addr add 192.168.30.1/24 dev ${P}2
ip -n $VA addr add 10.67.0.1/30 dev ${P}3; ip -n $VB addr add 10.67.0.2/30 dev ${P}4
ip -n $VB addr add 192.168.31.1/24 dev ${P}5; ip -n $VCB addr add 192.168.31.50/24 dev ${P}6
for l in "$VCA ${P}1" "$VA ${P}2" "$VA ${P}3" "$VB ${P}4" "$VB ${P}5" "$VCB ${P}6"; do
  set -- $l; ip -n $1 link set $2 up
done
ip -n $VCA route add default via 192.168.30.1
ip -n $VCB route add default via 192.168.31.1
ip -n $VA route add 192.168.31.0/24 via 10.67.0.2
ip -n $VB route add 192.168.30.0/24 via 10.67.0.1
ip netns exec $VA sysctl -qw net.ipv4.ip_forward=1
ip netns exec $VB sysctl -qw net.ipv4.ip_forward=1

# ---- 1. throughput and RTT, interleaved
measure() { # KIND CLIENT_NS SERVER_NS SERVER_IP
  ip netns exec $3 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  srv=$!
  sleep 0.3
  bps=$(ip netns exec $2 iperf3 -c $4 -p 5201 -t $SECS -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
  wait $srv 2>/dev/null || true
  srv=
  rtt=$(ip netns exec $2 ping -n -q -c 50 -i 0.02 $4 | awk -F'/' '/^rtt/ { print $5 }')
  echo "$1 $bps $rtt" >>$D/rounds.txt
}
i=0
while [ $i -lt $ROUNDS ]; do
  measure wg $CA $CB 192.168.11.50
  measure veth $VCA $VCB 192.168.31.50
  i=$((i + 1))
done

python3 - "$D/rounds.txt" "$add_ms" "$first_ms" "$ROUNDS" "$SECS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(kind, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == kind)
wg_bps, veth_bps = med("wg", 1), med("veth", 1)
wg_rtt, veth_rtt = med("wg", 2), med("veth", 2)
print(f"rounds {sys.argv[4]} x {sys.argv[5]} s, interleaved; medians")
print(f"| path | TCP Mbit/s | RTT ms (avg of 50 pings) |")
print(f"|---|---|---|")
print(f"| wg (labnet peering, wireguard-go both ends) | {wg_bps/1e6:.0f} | {wg_rtt:.3f} |")
print(f"| veth only (same hops, no tunnel) | {veth_bps/1e6:.0f} | {veth_rtt:.3f} |")
print(f"| ratio wg/veth | {wg_bps/veth_bps:.3f} | {wg_rtt/veth_rtt:.2f} |")
print(f"all rounds (kind bits/s rtt_ms): " + "; ".join(" ".join(r) for r in rows))
print(f"peer add -> first reply through the tunnel: {float(sys.argv[3]):.0f} ms (the peer add command itself: {float(sys.argv[2]):.0f} ms)")
EOF
