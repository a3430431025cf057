#!/bin/bash
# Side-by-side DNS forwarder benchmark: labnet dns vs dnsmasq, both forwarding to the same NSD
# upstream, cache on (10000 entries) and off, round robin with the shared harness
# (../shared/bench, see its README; results in bench/RESULTS.md, section DNS).
#
# usage: bench/run-dns-compare.sh [ROUNDS] [SECONDS] [LABNET_BINARY]
#   defaults: 3 rounds, 10 s throughput runs, target/release/labnet (cargo build --release -p labnet)
#
# Runs a private copy of the harness with dn-* namespace names and /tmp/dnsbench as work dir,
# so it cannot tear down another bench's pe-* namespaces. Needs root, nsd, dnsperf and
# dnsmasq-base (dnsperf is not part of CI: apt-get install dnsperf).
set -eu
ROUNDS=${1:-3} T=${2:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(realpath "${3:-$HERE/../target/release/labnet}")
SRC=${HARNESS:-/work/shared/bench}
export PE_ROOT=/tmp/dnsbench
H=$PE_ROOT/harness
rm -rf "$H"; mkdir -p "$H" "$PE_ROOT/state"; cp -r "$SRC"/. "$H"/
sed -i -e 's/^NS_SRV=pe-srv/NS_SRV=dn-srv/' -e 's/^NS_CLI=pe-cli/NS_CLI=dn-cli/' -e 's/^NS_UP=pe-up/NS_UP=dn-up/' "$H/lib.sh"
sed -i -e "s#/tmp/labbench/#$PE_ROOT/#g" "$H/compare.sh" "$H/dns-bench.sh"
export PE_WORK=$PE_ROOT/work
# The harness's forwarder side: 192.168.0.1/16 on pebr0, upstream NSD at 10.99.0.2.
for c in 10000 0; do
    cat >"$PE_ROOT/bench-cache$c.toml" <<TOML
name = "bench"
[bridge]
name = "pebr0"
address = "192.168.0.1/16"
[dns]
zone = "lab"
upstreams = ["10.99.0.2"]
cache_size = $c
timeout_ms = 2000
TOML
done
LABNET="env LABNET_STATE_DIR=$PE_ROOT/state $BIN dns bench --config $PE_ROOT/bench-cache"
FWD='dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --listen-address={LISTEN} --bind-interfaces --server={UPSTREAM} --user=root --group=root --pid-file= --log-facility=-'
echo "labnet: $BIN ($("$BIN" --version)); $(dnsmasq --version | head -1)"
"$H/compare.sh" dns "$ROUNDS" "-t $T" \
  dnsmasq-cache10000="$FWD --cache-size=10000" \
  labnet-cache10000="${LABNET}10000.toml" \
  dnsmasq-nocache="$FWD --cache-size=0" \
  labnet-nocache="${LABNET}0.toml"
