#!/bin/bash
# Source-built kernel boot benchmark (issue 13): on the same tinyconfig kernel built by
# `labnet kernel build` (the one the tests cache), interleaved in one loop so machine load
# hits all variants alike:
#   labnet  `labnet vm run --kernel .../bzImage -- true` (PVH: the vmlinux beside it)
#   vng     `vng -r <tree>/arch/x86/boot/bzImage --disable-kvm -- true`
#   bare    `qemu-system-x86_64 -M microvm -kernel vmlinux` + a one-line busybox init (the floor)
#   bare-lc the same floor with labnet's kernel command line for PVH under TCG (pci=off, rcu_expedited,
#           no_timer_check, noapictimer, lpj=): labnet's own cost over QEMU + kernel, with the
#           boot shortcuts taken out
# Needs root, a built labnet, QEMU, busybox-static and vng (pip install virtme-ng).
#   N=5 VNG=/path/to/vng bench/source-kernel.sh
# LABNET_BEFORE=/path/to/older/labnet adds that build as one more variant (before/after in
# one run), booting KDIR_BEFORE (default: KDIR) when the kernel changed too.
set -u
N=${N:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
LABNET=${LABNET:-$HERE/../target/debug/labnet}
KDIR=${KDIR:-$(ls -td /var/cache/labnet/kernel/6.1* | head -1)}
OBJ=${OBJ:-$(ls -td /var/cache/labnet/kernel/obj-* | head -1)}
VNG=${VNG:-vng}
ROOT=$(mktemp -d /tmp/labnet-lkbench.XXXXXX)
export LABNET_RUN_DIR=$ROOT/run LABNET_STATE_DIR=$ROOT/state LABNET_CONFIG_DIR=$ROOT/etc
LAB=lkb$$
cat > "$ROOT/lab.toml" <<TOML
name = "$LAB"
[bridge]
name = "${LAB}br"
address = "10.81.0.1/24"
[dhcp]
range_start = "10.81.0.100"
range_end = "10.81.0.150"
TOML
cleanup() { "$LABNET" down "$LAB" >/dev/null 2>&1; rm -rf "$ROOT"; }
trap cleanup EXIT
"$LABNET" up "$LAB" --config "$ROOT/lab.toml" >/dev/null || exit 1

# The floor's initramfs: static busybox and an /init that resets at once (reboot=t, -no-reboot).
mkdir -p "$ROOT/ird/bin" "$ROOT/ird/dev"
cp /bin/busybox "$ROOT/ird/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox reboot -f\n' > "$ROOT/ird/init"
chmod +x "$ROOT/ird/init"
mknod "$ROOT/ird/dev/console" c 5 1
(cd "$ROOT/ird" && find . | cpio -o -H newc --quiet) > "$ROOT/bare.cpio"

ms() { date +%s%3N; }
declare -A T
add() { T[$1]="${T[$1]:-} $2"; }
labnet_once() {
	local s=$(ms)
	timeout 120 "$LABNET" vm run --lab "$LAB" --name lk --kernel "$KDIR/bzImage" -- true </dev/null >/dev/null 2>"$ROOT/labnet.err" \
		|| { echo "labnet vm run failed" >&2; cat "$ROOT/labnet.err" >&2; }
	add labnet $(( $(ms) - s ))
}
labnet_before_once() {
	local s=$(ms)
	timeout 120 "$LABNET_BEFORE" vm run --lab "$LAB" --name lkb --kernel "${KDIR_BEFORE:-$KDIR}/bzImage" -- true </dev/null >/dev/null 2>"$ROOT/labnet.err" \
		|| { echo "labnet (before) vm run failed" >&2; cat "$ROOT/labnet.err" >&2; }
	add labnet-before $(( $(ms) - s ))
}
vng_once() {
	local s=$(ms)
	timeout 120 "$VNG" -r "$OBJ/arch/x86/boot/bzImage" --disable-kvm -- true </dev/null >"$ROOT/vng.out" 2>&1
	echo "vng rc=$?" >> "$ROOT/vng.rcs"
	add vng $(( $(ms) - s ))
}
bare_once() {
	local s=$(ms)
	timeout 120 qemu-system-x86_64 -M microvm,acpi=off,ioapic2=off -accel tcg -m 1G -smp 2 -nodefaults -no-user-config \
		-display none -no-reboot -serial null -kernel "$KDIR/vmlinux" -initrd "$ROOT/bare.cpio" \
		-append "console=ttyS0 panic=-1 quiet loglevel=3 tsc_early_khz=2000000 reboot=t" </dev/null >/dev/null 2>&1 \
		|| echo "bare qemu failed" >&2
	add bare $(( $(ms) - s ))
}

# What labnet adds to a PVH boot under TCG (vm/src/qemu.rs cmdline_for), HZ from the config.
HZ=$(sed -n 's/^CONFIG_HZ=//p' "$KDIR/config")
bare_lc_once() {
	local s=$(ms)
	timeout 120 qemu-system-x86_64 -M microvm,acpi=off,ioapic2=off -accel tcg -m 1G -smp 2 -nodefaults -no-user-config \
		-display none -no-reboot -serial null -kernel "$KDIR/vmlinux" -initrd "$ROOT/bare.cpio" \
		-append "console=ttyS0 panic=-1 quiet loglevel=3 tsc_early_khz=2000000 reboot=t pci=off no_timer_check rcupdate.rcu_expedited=1 noapictimer lpj=$((2000000000 / HZ))" \
		</dev/null >/dev/null 2>&1 || echo "bare-lc qemu failed" >&2
	add bare-lc $(( $(ms) - s ))
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for i in $(seq "$N"); do
	labnet_once; [ -n "${LABNET_BEFORE:-}" ] && labnet_before_once; vng_once; bare_once; bare_lc_once
done

echo "N=$N, $(nproc) cores, load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg); kernel $KDIR${LABNET_BEFORE:+, before: ${KDIR_BEFORE:-$KDIR}}"
echo "vng exit codes: $(sort "$ROOT/vng.rcs" | uniq -c | tr '\n' ' ')"
echo "vng last output: $(tail -c 300 "$ROOT/vng.out" | tr '\n' ' ')"
printf "%-8s %8s %8s %8s   %s\n" variant median min max "all (ms)"
for k in labnet ${LABNET_BEFORE:+labnet-before} vng bare bare-lc; do
	python3 - "$k" ${T[$k]} <<'PY'
import sys, statistics
k, xs = sys.argv[1], [int(x) for x in sys.argv[2:]]
print(f"{k:<8} {statistics.median(xs)/1000:7.2f}s {min(xs)/1000:7.2f}s {max(xs)/1000:7.2f}s   {' '.join(map(str, xs))}")
PY
done
