#!/usr/bin/env bash
# Times `labnet up` + `down` of a WireGuard lab against seed 000's oneshot (ip/wg/iptables
# processes) in the same run, both with wireguard-go as the WireGuard backend.
# Needs: root, hyperfine, iptables, wireguard-go, wireguard-tools, a release build
# (cargo build --release -p labnet), and the shared harness (SHARED, default ../shared/bench).
# Usage: bench/updown.sh [RUNS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$here/../../shared/bench}
LABNET=${LABNET:-$here/../target/release/labnet}
RUNS=${1:-20}
P=bu
export DIR=/tmp/$P-seedbench
"$SHARED/seed/bounce.sh" up $P >/dev/null
trap '"$SHARED/seed/bounce.sh" down $P >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# State on tmpfs, as /run/labnet is in real use (fsync on a busy disk is not what we time).
work=$(mktemp -d -p /dev/shm)
cat >"$work/lab.toml" <<TOML
name = "$P-lab"
[bridge]
name = "${P}br0"
address = "192.168.0.1/24"
[uplink]
kind = "wireguard"
interface = "${P}wgl"
address = "192.168.20.1/24"
private_key_file = "$DIR/lab.key"
peer_public_key = "$(cat "$DIR/bounce.pub")"
endpoint = "192.168.99.2:51820"
TOML
export LABNET_RUN_DIR=$work/run LABNET_STATE_DIR=$work/state
hyperfine -N -w 2 -r "$RUNS" --export-markdown "$work/table.md" \
  -n 'seed 000 oneshot (ip/wg/iptables)' "bash -c '\"$SHARED/seed/oneshot.sh\" up $P && \"$SHARED/seed/oneshot.sh\" down $P'" \
  -n 'labnet up + down' "bash -c '$LABNET up $P-lab --config $work/lab.toml --no-daemons >/dev/null && $LABNET down $P-lab >/dev/null'" \
  -n 'labnet up + down (no bash)' "$here/updown-pair.sh $LABNET $P-lab $work/lab.toml"
cat "$work/table.md"
