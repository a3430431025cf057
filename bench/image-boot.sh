#!/bin/bash
# Long-lived VM benchmark (issue 14): `labnet vm start --image` → `labnet vm ssh --wait`
# answering, vs bare QEMU booting the same image (same kernel, initrd, q35, TCG, a fresh
# overlay) until its serial console shows the login prompt; interleaved so machine load hits
# both alike. Then a warm `labnet image build` (root tarball cached). Needs root, a built
# labnet, and an image (default: the tests' image store, LABNET_IMAGE_DIR, image "test").
#   N=5 LABNET_IMAGE_DIR=/var/cache/labnet/images/KEY bench/image-boot.sh
set -u
N=${N:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
LABNET=${LABNET:-$HERE/../target/debug/labnet}
IMG=${IMG:-test}
: "${LABNET_IMAGE_DIR:?set LABNET_IMAGE_DIR (e.g. /var/cache/labnet/images/KEY)}"
export LABNET_IMAGE_DIR
D=$LABNET_IMAGE_DIR/$IMG
ROOT=$(mktemp -d /tmp/labnet-imgbench.XXXXXX)
export LABNET_RUN_DIR=$ROOT/run LABNET_STATE_DIR=$ROOT/state LABNET_CONFIG_DIR=$ROOT/etc
LAB=lib$$
cat > "$ROOT/lab.toml" <<TOML
name = "$LAB"
[bridge]
name = "${LAB}br"
address = "10.84.0.1/24"
[dhcp]
range_start = "10.84.0.100"
range_end = "10.84.0.150"
TOML
cleanup() { "$LABNET" vm stop k1 --lab "$LAB" >/dev/null 2>&1; "$LABNET" down "$LAB" >/dev/null 2>&1; rm -rf "$ROOT"; }
trap cleanup EXIT
"$LABNET" up "$LAB" --config "$ROOT/lab.toml" >/dev/null || exit 1

ms() { date +%s%3N; }
declare -A T
add() { T[$1]="${T[$1]:-} $2"; }

labnet_once() {
	local s=$(ms)
	"$LABNET" vm start --lab "$LAB" --image "$IMG" --name k1 --timeout 600 --daemonize >/dev/null 2>&1 || { echo "vm start failed" >&2; return; }
	timeout 300 "$LABNET" vm ssh k1 --lab "$LAB" --wait 280 >/dev/null 2>&1 || echo "vm ssh --wait failed" >&2
	add labnet-ssh $(( $(ms) - s ))
	s=$(ms)
	"$LABNET" vm stop k1 --lab "$LAB" >/dev/null 2>&1
	add labnet-stop $(( $(ms) - s ))
}

bare_once() {
	local ov=$ROOT/bare.qcow2 log=$ROOT/bare.log s
	rm -f "$ov" "$log"; qemu-img create -q -f qcow2 -b "$D/disk.qcow2" -F qcow2 "$ov"
	s=$(ms)
	timeout 300 qemu-system-x86_64 -M q35 -accel tcg -m 1G -smp 2 -nodefaults -no-user-config -display none \
		-kernel "$D/vmlinuz" -initrd "$D/initrd.img" -append "console=ttyS0 panic=-1 quiet loglevel=3 no_timer_check root=/dev/vda rw systemd.hostname=bare" \
		-serial "file:$log" -drive "file=$ov,format=qcow2,if=none,id=d0" -device virtio-blk-pci,drive=d0 &
	local q=$!
	while kill -0 $q 2>/dev/null && ! grep -aq 'login:' "$log" 2>/dev/null; do sleep 0.1; done
	add bare-login $(( $(ms) - s ))
	kill $q; wait $q 2>/dev/null
}

for i in $(seq "$N"); do labnet_once; bare_once; done
s=$(ms)
LABNET_IMAGE_DIR=$ROOT/images "$LABNET" image build warm --no-kmount $(for p in $(jq -r '.packages[]' "$D/manifest.json"); do echo --package "$p"; done) >/dev/null 2>&1 || echo "warm build failed" >&2
add image-build-warm $(( $(ms) - s ))

for k in labnet-ssh bare-login labnet-stop image-build-warm; do
	sorted=$(tr ' ' '\n' <<<"${T[$k]:-}" | grep . | sort -n)
	n=$(wc -l <<<"$sorted")
	med=$(sed -n "$(( (n + 1) / 2 ))p" <<<"$sorted")
	printf '%-18s median %6.2f s  (min %.2f, max %.2f, n=%d)\n' "$k" "$(bc -l <<<"$med/1000")" \
		"$(bc -l <<<"$(head -1 <<<"$sorted")/1000")" "$(bc -l <<<"$(tail -1 <<<"$sorted")/1000")" "$n"
done
