#!/bin/bash
# VM boot benchmark (issue 6): labnet vm on microvm and q35 vs virtme-ng, same kernel, same
# command, interleaved in one loop so machine load hits all variants alike. Needs root, a
# built labnet (cargo build -p labnet), QEMU, the Debian guest kernel from .ci/install-deps.sh,
# and vng (pip install virtme-ng; it wants the modules in /lib/modules/VERSION).
#   N=5 bench/vm-boot.sh
set -u
N=${N:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
LABNET=${LABNET:-$HERE/../target/debug/labnet}
K=${K:-/var/cache/labnet-kernel/boot/vmlinuz-6.1.0-56-amd64}
M=${M:-/var/cache/labnet-kernel/lib/modules/6.1.0-56-amd64}
VNG=${VNG:-vng}
ROOT=$(mktemp -d /tmp/labnet-vmbench.XXXXXX)
export LABNET_RUN_DIR=$ROOT/run LABNET_STATE_DIR=$ROOT/state LABNET_CONFIG_DIR=$ROOT/etc
LAB=vb$$
cat > "$ROOT/lab.toml" <<TOML
name = "$LAB"
[bridge]
name = "${LAB}br"
address = "10.79.0.1/24"
[dhcp]
range_start = "10.79.0.100"
range_end = "10.79.0.150"
TOML
cleanup() { "$LABNET" down "$LAB" >/dev/null 2>&1; rm -rf "$ROOT"; }
trap cleanup EXIT
"$LABNET" up "$LAB" --config "$ROOT/lab.toml" >/dev/null || exit 1

ms() { date +%s%3N; }
declare -A T
add() { T[$1]="${T[$1]:-} $2"; }

# vm run -- true: whole command, boot to power-off.
run_once() { # machine
	local s=$(ms)
	timeout 120 "$LABNET" vm run --lab "$LAB" --name "r$1" --kernel "$K" --modules "$M" --machine "$1" -- true </dev/null >/dev/null 2>&1 \
		|| echo "vm run $1 failed" >&2
	add "run-$1" $(( $(ms) - s ))
}
# vm start (daemonized) until the guest's lease is in labnet dhcpd's lease log.
lease_once() { # machine
	local s=$(ms)
	"$LABNET" vm start --lab "$LAB" --name "s$1" --kernel "$K" --modules "$M" --machine "$1" --daemonize </dev/null >/dev/null 2>&1 \
		&& "$LABNET" vm ip "s$1" --lab "$LAB" --wait 120 >/dev/null 2>&1 || echo "lease $1 failed" >&2
	add "lease-$1" $(( $(ms) - s ))
	"$LABNET" vm stop "s$1" --lab "$LAB" --timeout 5 >/dev/null 2>&1
}
vng_once() {
	local s=$(ms)
	# vng cannot return the guest's status here (255 without a tty); only time it.
	timeout 120 "$VNG" -r "$K" --disable-kvm -- true </dev/null >/dev/null 2>&1
	add vng $(( $(ms) - s ))
}

for i in $(seq "$N"); do
	run_once microvm; run_once q35; vng_once; lease_once microvm; lease_once q35
done

echo "N=$N, $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-14s %8s %8s %8s   %s\n" variant median min max "all (ms)"
for k in run-microvm run-q35 vng lease-microvm lease-q35; do
	python3 - "$k" ${T[$k]} <<'PY'
import sys, statistics
k, xs = sys.argv[1], [int(x) for x in sys.argv[2:]]
print(f"{k:<14} {statistics.median(xs)/1000:7.2f}s {min(xs)/1000:7.2f}s {max(xs)/1000:7.2f}s   {' '.join(map(str, xs))}")
PY
done
