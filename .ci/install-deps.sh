#!/bin/sh
# Installs every host tool labnet's tests use, on Debian 12 (bookworm), as root.
# QEMU comes from bookworm-backports (bookworm's 7.2 conflicts with qemu-utils 10 on these
# machines); the backports source is passed to apt on the command line so /etc/apt stays untouched.
# The guest kernel is Debian's linux-image 6.1, unpacked (not installed) under $LABNET_KDIR.
set -eu
KDIR=${LABNET_KDIR:-/var/cache/labnet-kernel}
KVER=${LABNET_KVER:-6.1.0-56-amd64}
export DEBIAN_FRONTEND=noninteractive
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/parts" "$tmp/lists/partial"
cp /etc/apt/sources.list.d/debian.sources "$tmp/parts/"
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main" \
  >"$tmp/parts/backports.list"
apt="apt-get -o DPkg::Lock::Timeout=900 -o Dir::Etc::SourceParts=$tmp/parts -o Dir::Etc::SourceList=/dev/null -o Dir::State::Lists=$tmp/lists"
$apt -qq update
$apt -qq install -y --no-install-recommends \
  iproute2 nftables wireguard-go wireguard-tools busybox-static cpio kmod iputils-ping procps \
  isc-dhcp-client dhcpcd-base dnsutils knot-dnsutils dnsmasq-base nsd tcpdump systemd \
  ceph-mon ceph-mgr ceph-osd ceph-mds ceph-common psmisc strace >/dev/null
# The source-built guest kernel (issue 13): Debian's kernel source and what building it needs
# (xz-utils: tar unpacks the .tar.xz source; the bzImage payload is decoded in-process).
$apt -qq install -y --no-install-recommends \
  linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev xz-utils >/dev/null
# The fuzzing step (fuzz/tests/libfuzzer.rs): libfuzzer-sys compiles libFuzzer with a C++ compiler.
$apt -qq install -y --no-install-recommends g++ >/dev/null
$apt -qq -t bookworm-backports install -y --no-install-recommends qemu-system-x86 >/dev/null
# labnet image build (mmdebstrap, mkfs.ext4 -d, ssh-keygen) and vm ssh/cp (ssh, scp, ssh-keyscan).
$apt -qq install -y --no-install-recommends mmdebstrap e2fsprogs openssh-client >/dev/null
# The CLI's tests (issue 16): `man -l` renders labnet's man page; setpriv/unshare (util-linux)
# drop CAP_NET_ADMIN and give mount.ceph a network namespace of its own; bash -n checks the
# completion script.
$apt -qq install -y --no-install-recommends man-db groff-base util-linux bash >/dev/null
# Labs across hosts (issue 20): bench/peers.sh measures the tunnels with iperf3.
$apt -qq install -y --no-install-recommends iperf3 >/dev/null
if [ ! -e "$KDIR/boot/vmlinuz-$KVER" ]; then
  mkdir -p "$KDIR"
  (cd "$tmp" && chmod 777 . && $apt -qq download "linux-image-$KVER")
  dpkg -x "$tmp"/linux-image-"$KVER"_*.deb "$KDIR"
  depmod -b "$KDIR" "$KVER"
fi
echo "guest kernel: $KDIR/boot/vmlinuz-$KVER"
qemu-system-x86_64 --version | head -1

# .ci/run checks formatting and clippy: both components of the Rust toolchain (rustup's
# default profile has them; a minimal one does not).
if command -v rustup >/dev/null 2>&1; then
    rustup component add clippy rustfmt
fi

# virtiofs shares and the debugger (issue 19): the Rust virtiofsd (not packaged in Debian 12),
# built once into a cache root per version and linked into PATH; gdb for `labnet vm gdb`.
$apt -qq install -y --no-install-recommends libcap-ng-dev libseccomp-dev pkg-config gdb >/dev/null
VIRTIOFSD_VERSION=1.14.0
virtiofsd_root=/var/cache/labnet/virtiofsd/$VIRTIOFSD_VERSION
if [ ! -x "$virtiofsd_root/bin/virtiofsd" ]; then
    rm -rf "$virtiofsd_root.partial" && mkdir -p "$virtiofsd_root.partial"
    cargo install --locked --quiet --version "$VIRTIOFSD_VERSION" --root "$virtiofsd_root.partial" virtiofsd
    rm -rf "$virtiofsd_root" && mv "$virtiofsd_root.partial" "$virtiofsd_root"
fi
ln -sf "$virtiofsd_root/bin/virtiofsd" /usr/local/bin/virtiofsd
virtiofsd --version

# vmcore checks (issue 19): drgn (PyPI, manylinux wheels) opens `labnet vm dump`'s vmcore with
# the vmlinux. One venv per version in the cache (a venv cannot be moved: it is made in place
# and marked complete last), linked into PATH.
$apt -qq install -y --no-install-recommends python3-venv >/dev/null
DRGN_VERSION=0.3.0
drgn_root=/var/cache/labnet/drgn-venv/$DRGN_VERSION
if [ ! -e "$drgn_root/.complete" ]; then
    rm -rf "$drgn_root" && mkdir -p "$(dirname "$drgn_root")"
    python3 -m venv "$drgn_root"
    "$drgn_root/bin/pip" install --quiet --disable-pip-version-check "drgn==$DRGN_VERSION"
    touch "$drgn_root/.complete"
fi
ln -sf "$drgn_root/bin/drgn" /usr/local/bin/drgn
drgn --version | head -1
