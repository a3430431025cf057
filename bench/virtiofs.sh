#!/bin/bash
# virtiofs vs 9p (issue 19), in one run on the same source-built kernel, guest and tree:
#   git status   over a subtree of the Debian linux-source tree (SUBDIR, default include/:
#                6.2k entries; the whole tree, 84k, took over 6 min on virtiofs alone under
#                TCG on a loaded machine) shared read-only into the guest (its git
#                dir, made once on the host and cached, on a second share; core.checkStat=
#                minimal so both transports do the same stat-only walk, no re-hashing)
#   git status   again, at once (what a developer's second look costs: guest caches warm)
#   find | wc -l over the same tree
#   read 1 GiB   `cat` of a 1 GiB host file to /dev/null
# Each transport gets a fresh VM (cold guest caches), ROUNDS times, alternating; times are
# the guest's own (/proc/uptime, 10 ms). The 9p runs use a PATH without virtiofsd.
# Needs root, a built labnet, QEMU, virtiofsd, git, the source kernel and tree in
# /var/cache/labnet.     ROUNDS=1 SUBDIR=include bench/virtiofs.sh
set -u
ROUNDS=${ROUNDS:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
LABNET=${LABNET:-$HERE/../target/debug/labnet}
KDIR=${KDIR:-$(ls -td /var/cache/labnet/kernel/6.1*/ | grep -v partial | head -1)}
SRC=${SRC:-/var/cache/labnet/src/linux-source-6.1}
SUBDIR=${SUBDIR:-include}
TREE=$SRC/$SUBDIR
VERSION=$(cat "$SRC.version" 2>/dev/null || echo unknown)
GITDIR=${GITDIR:-/var/cache/labnet/bench/linux-git-$VERSION-$(echo "$SUBDIR" | tr / -)}
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

# The tree's git dir, outside the tree (which stays as unpacked): made once per version;
# -f: Debian's .gitignore ignores everything at the top level.
if [ ! -e "$GITDIR/HEAD" ]; then
	echo "making $GITDIR (git add of the whole tree, once)" >&2
	rm -rf "$GITDIR.partial" && mkdir -p "$(dirname "$GITDIR")"
	g="git --git-dir=$GITDIR.partial --work-tree=$TREE"
	git init -q --bare "$GITDIR.partial" && git --git-dir="$GITDIR.partial" config core.bare false &&
		$g config core.checkStat minimal && $g config core.trustctime false && $g config gc.auto 0 &&
		$g add -A -f && $g -c user.name=bench -c user.email=bench@localhost commit -q -m tree &&
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
s=$(t); n=$(git --git-dir=/mnt/gitdir --work-tree=/mnt/src status --porcelain | wc -l); e=$(t)
echo "RESULT git-status-again $(d $s $e) s ($n changed)"
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
echo "kernel $KDIR, tree $TREE ($VERSION, $(find "$TREE" | wc -l) entries), $(nproc) CPUs, TCG, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
	once virtiofs
	once 9p
done
