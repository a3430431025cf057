#!/bin/bash
# Side-by-side DHCP benchmark: labnet dhcpd vs dnsmasq vs Kea (memfile, persist=true), round
# robin with the shared harness (../shared/bench, see its README).
#
# usage: bench/run-dhcp-compare.sh [ROUNDS] [CLIENTS] [LABNET_BINARY]
#   defaults: 3 rounds, 10000 clients, target/release/labnet (cargo build --release -p labnet)
#
# The harness's namespace names (pe-srv, pe-cli, pe-up) are fixed, and a second bench on the
# same machine would tear down the first one's namespaces; this runs a private copy with
# dh-* names and its own /tmp/dhbench work dir instead. Needs root, kea-dhcp4-server,
# kea-admin and dnsmasq-base (not part of CI).
set -eu
ROUNDS=${1:-3} N=${2:-10000}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${3:-$HERE/../target/release/labnet}
SRC=${HARNESS:-/work/shared/bench}
export PE_ROOT=/tmp/dhbench
H=$PE_ROOT/harness
rm -rf "$H"; mkdir -p "$H"; cp -r "$SRC"/. "$H"/
sed -i -e 's/^NS_SRV=pe-srv/NS_SRV=dh-srv/' -e 's/^NS_CLI=pe-cli/NS_CLI=dh-cli/' -e 's/^NS_UP=pe-up/NS_UP=dh-up/' "$H/lib.sh"
sed -i -e "s#/tmp/labbench/#$PE_ROOT/#g" "$H/compare.sh" "$H/dhcp-bench.sh"
export PE_WORK=$PE_ROOT/work
echo "labnet: $BIN ($("$BIN" --version))"
"$H/compare.sh" dhcp "$ROUNDS" "-n $N" \
  labnet="$HERE/labnet-dhcpd.sh {IFACE} {SERVER_IP} {PREFIX} {RANGE_START} {RANGE_END} {WORKDIR} $BIN" \
  kea='{HARNESS}/servers/kea-dhcp4.sh {IFACE} {SUBNET} {RANGE_START} {RANGE_END} {LEASEFILE} {WORKDIR} true 0' \
  dnsmasq='{HARNESS}/servers/dnsmasq-dhcp.sh {IFACE} {RANGE_START} {RANGE_END} {NETMASK} {LEASEFILE}'
