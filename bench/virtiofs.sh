#!/bin/bash
# virtiofs vs 9p (issue 19), in one run on the same source-built kernel, guest and tree:
#   git status   over the Debian linux-source tree shared read-only into the guest (its git
#                dir, made once on the host and cached, on a second share; core.checkStat=
#                minimal so both transports do the same stat-only walk, no re-hashing)
#   find | wc -l over the same tree
#   read 1 GiB   `cat` of a 1 GiB host file to /dev/null
# Each transport gets a fresh VM (cold guest caches), ROUNDS times, alternating; times are
# the guest's own (/proc/uptime, 10 ms). The 9p runs use a PATH without virtiofsd.
# Needs root, a built labnet, QEMU, virtiofsd, git, the source kernel and tree in
# /var/cache/labnet.     ROUNDS=1 bench/virtiofs.sh
set -u
ROUNDS=${ROUNDS:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
LABNET=${LABNET:-$HERE/../target/debug/labnet}
KDIR=${KDIR:-$(ls -td /var/cache/labnet/kernel/6.1*/ | grep -v partial | head -1)}
TREE=${TREE:-/var/cache/labnet/src/linux-source-6.1}
VERSION=$(cat "$TREE.version" 2>/dev/null || echo unknown)
GITDIR=${GITDIR:-/var/cache/labnet/bench/linux-git-$VERSION}
ROOT=$(mktemp -d /tmp/labnet-vfsbench.XXXXXX)
export LABNET_RUN_DIR=$ROOT/run LABNET_STATE_DIR=$ROOT/state LABNET_CONFIG_DIR=$ROOT/etc
LAB=lvb$$
cat > "$ROOT/lab.toml" <<TOML
name = "$LAB"
[bridge]
name = "${LAB}br"
address = "10.82.0.1/24"
[dhcp]
range_start = "10.82.0.100"
range_end = "10.82.0.150"
TOML
cleanup() { "$LABNET" down "$LAB" >/dev/null 2>&1; rm -rf "$ROOT"; }
trap cleanup EXIT
command -v virtiofsd >/dev/null || { echo "virtiofsd not in PATH" >&2; exit 1; }
"$LABNET" up "$LAB" --config "$ROOT/lab.toml" >/dev/null || exit 1

# The tree's git dir, outside the tree (which stays as unpacked): made once per version.
if [ ! -e "$GITDIR/HEAD" ]; then
	echo "making $GITDIR (git add of the whole tree, once)" >&2
	rm -rf "$GITDIR.partial" && mkdir -p "$(dirname "$GITDIR")"
	g="git --git-dir=$GITDIR.partial --work-tree=$TREE"
	git init -q --bare "$GITDIR.partial" && git --git-dir="$GITDIR.partial" config core.bare false &&
		$g config core.checkStat minimal && $g config core.trustctime false && $g config gc.auto 0 &&
		$g add -A && $g -c user.name=bench -c user.email=bench@localhost commit -q -m tree &&
		mv "$GITDIR.partial" "$GITDIR" || exit 1
fi
mkdir -p "$ROOT/data"
dd if=/dev/zero of="$ROOT/data/big" bs=1M count=1024 status=none

# git and its libraries in the generated initramfs.
adds=()
for f in /usr/bin/git $(ldd /usr/bin/git | grep -o '/[^ ]*'); do
	adds+=(--add "$(readlink -f "$f"):$f")
done
GUEST='t() { cut -d" " -f1 /proc/uptime; }
d() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }
s=$(t); n=$(git --git-dir=/mnt/gitdir --work-tree=/mnt/src status --porcelain | wc -l); e=$(t)
echo "RESULT git-status $(d $s $e) s ($n changed)"
s=$(t); n=$(find /mnt/src | wc -l); e=$(t)
echo "RESULT find $(d $s $e) s ($n entries)"
s=$(t); cat /mnt/data/big >/dev/null; e=$(t)
echo "RESULT read-1GiB $(d $s $e) s"'

once() { # once virtiofs|9p
	local path=$PATH
	[ "$1" = 9p ] && path=$(echo "$PATH" | tr ':' '\n' | grep -vx /usr/local/bin | paste -sd:)
	PATH=$path timeout 1500 "$LABNET" vm run --lab "$LAB" --name lvb --kernel "$KDIR/bzImage" \
		--mem 1536M --timeout 1400 "${adds[@]}" \
		--share-ro "$TREE:src" --share-ro "$GITDIR:gitdir" --share-ro "$ROOT/data:data" \
		-- sh -c "$GUEST" </dev/null 2>"$ROOT/err" | sed "s/^RESULT /$1 /"
	grep -h "shares " "$ROOT/err" >&2
}
echo "kernel $KDIR, tree $TREE ($VERSION), $(nproc) CPUs, TCG"
for r in $(seq "$ROUNDS"); do
	once virtiofs
	once 9p
done
