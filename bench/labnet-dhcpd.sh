#!/bin/bash
# labnet's DHCP server under the shared bench harness (shared/bench/dhcp-bench.sh, compare.sh).
# Writes a lab config for the harness's bridge and runs `labnet dhcpd` in the foreground, with
# durable leases (every ACK fsynced before it is sent) under WORKDIR/state/bench/leases.log.
# Args: IFACE SERVER_IP PREFIX RANGE_START RANGE_END WORKDIR [LABNET_BINARY]
set -e
IFACE=$1 SERVER_IP=$2 PREFIX=$3 START=$4 END=$5 WORK=$6
BIN=${7:-$(cd "$(dirname "$0")/.." && pwd)/target/release/labnet}
mkdir -p "$WORK/labnet"
cat >"$WORK/labnet/bench.toml" <<TOML
name = "bench"
[bridge]
name = "$IFACE"
address = "$SERVER_IP/$PREFIX"
[dhcp]
range_start = "$START"
range_end = "$END"
lease_secs = 43200
TOML
export LABNET_STATE_DIR="$WORK/state" LABNET_RUN_DIR="$WORK/run" LABNET_CONFIG_DIR="$WORK/labnet"
exec "$BIN" dhcpd bench --config "$WORK/labnet/bench.toml"
