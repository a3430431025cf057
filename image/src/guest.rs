//! The files labnet puts into an image's root on top of the packages, as data: golden-tested
//! here, written by [`apply`]. Together they make a guest that takes its name from the
//! kernel command line (`systemd.hostname=`), leases an address on every ethernet link
//! sending that name, resolves through the DHCP-provided DNS (systemd-resolved), lets root in
//! over ssh with the lab's key only, and has a root shell on the serial console.
use std::path::Path;

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File {
        path: &'static str,
        mode: u32,
        text: &'static str,
    },
    Symlink {
        path: &'static str,
        target: &'static str,
    },
    /// Left by the packages or mmdebstrap but wrong for a shared image (e.g. the build
    /// host's hostname, host keys every image from the cached tarball would share).
    Remove { path: &'static str },
}

const NETWORK: &str = "\
# labnet: DHCP on every ethernet link; the request carries the hostname (the VM's name, from
# systemd.hostname= on the kernel command line) and the client id is the MAC, which the lab's
# dhcpd has a reservation for.
[Match]
Type=ether
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
ClientIdentifier=mac
SendHostname=yes
UseDNS=yes
UseDomains=yes
UseHostname=no
";

const SSHD: &str = "\
# labnet: root logs in with the lab's key only (written at boot by labnet-guest-setup from
# the kernel command line); one host key, generated when the image was built and pinned
# by labnet on the host.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile /etc/ssh/labnet_authorized_keys
HostKey /etc/ssh/ssh_host_ed25519_key
UseDNS no
";

const SETUP_UNIT: &str = "\
[Unit]
Description=labnet guest setup (the lab's ssh key, 9p and virtiofs shares)
After=local-fs.target systemd-udevd.service
Before=ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/labnet-guest-setup

[Install]
WantedBy=multi-user.target
";

const SETUP_SCRIPT: &str = "\
#!/bin/sh
# labnet guest setup, at every boot. The lab's ssh public key comes on the kernel command
# line as labnet.ssh_key=TYPE:BASE64 (`labnet vm start --image` puts it there) and becomes
# root's only authorized key; each 9p share QEMU offers is mounted at /mnt/TAG, and each
# virtiofs share named by labnet.virtiofs= too.
set -u
keys=/etc/ssh/labnet_authorized_keys
: >\"$keys.new\"
for w in $(cat /proc/cmdline); do
	case \"$w\" in
	labnet.ssh_key=*) echo \"${w#labnet.ssh_key=}\" | tr ':' ' ' >>\"$keys.new\" ;;
	esac
done
chmod 600 \"$keys.new\" && mv \"$keys.new\" \"$keys\"
modprobe -q 9pnet_virtio 2>/dev/null
for f in /sys/bus/virtio/drivers/9pnet_virtio/virtio*/mount_tag; do
	[ -e \"$f\" ] || continue
	tag=$(tr -d '\\000' <\"$f\")
	mkdir -p \"/mnt/$tag\"
	mountpoint -q \"/mnt/$tag\" ||
		mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 \"$tag\" \"/mnt/$tag\" ||
		echo \"labnet-guest-setup: cannot mount share $tag\" >&2
done
# virtiofs tags are not listed in sysfs before Linux 6.8: `labnet vm start` names them on
# the command line, as labnet.virtiofs=TAG[:ro],...
for w in $(cat /proc/cmdline); do
	case \"$w\" in
	labnet.virtiofs=*)
		modprobe -q virtiofs 2>/dev/null
		for t in $(echo \"${w#labnet.virtiofs=}\" | tr ',' ' '); do
			tag=${t%:ro}
			opt=rw
			[ \"$tag\" = \"$t\" ] || opt=ro
			mkdir -p \"/mnt/$tag\"
			mountpoint -q \"/mnt/$tag\" ||
				mount -t virtiofs -o \"$opt\" \"$tag\" \"/mnt/$tag\" ||
				echo \"labnet-guest-setup: cannot mount share $tag\" >&2
		done
		;;
	esac
done
exit 0
";

const AUTOLOGIN: &str = "\
# labnet: the serial console (`labnet vm console`) is a root shell; it is only reachable
# from the host that runs QEMU.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
";

const FSTAB: &str = "\
# labnet: the root is the VM's virtio disk (a per-VM overlay of the image).
/dev/vda / ext4 rw,errors=remount-ro 0 0
";

/// Everything written into the root, in order.
pub fn entries() -> Vec<Entry> {
    use Entry::*;
    vec![
        File {
            path: "/etc/systemd/network/80-labnet-dhcp.network",
            mode: 0o644,
            text: NETWORK,
        },
        File {
            path: "/etc/ssh/sshd_config.d/labnet.conf",
            mode: 0o644,
            text: SSHD,
        },
        File {
            path: "/etc/systemd/system/labnet-guest.service",
            mode: 0o644,
            text: SETUP_UNIT,
        },
        File {
            path: "/usr/local/sbin/labnet-guest-setup",
            mode: 0o755,
            text: SETUP_SCRIPT,
        },
        File {
            path: "/etc/systemd/system/serial-getty@ttyS0.service.d/labnet-autologin.conf",
            mode: 0o644,
            text: AUTOLOGIN,
        },
        File {
            path: "/etc/fstab",
            mode: 0o644,
            text: FSTAB,
        },
        Symlink {
            path: "/etc/resolv.conf",
            target: "../run/systemd/resolve/stub-resolv.conf",
        },
        Symlink {
            path: "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
            target: "/lib/systemd/system/systemd-networkd.service",
        },
        Symlink {
            path: "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
            target: "/lib/systemd/system/systemd-networkd.socket",
        },
        Symlink {
            path: "/etc/systemd/system/dbus-org.freedesktop.network1.service",
            target: "/lib/systemd/system/systemd-networkd.service",
        },
        Symlink {
            path: "/etc/systemd/system/multi-user.target.wants/systemd-resolved.service",
            target: "/lib/systemd/system/systemd-resolved.service",
        },
        Symlink {
            path: "/etc/systemd/system/dbus-org.freedesktop.resolve1.service",
            target: "/lib/systemd/system/systemd-resolved.service",
        },
        Symlink {
            path: "/etc/systemd/system/multi-user.target.wants/ssh.service",
            target: "/lib/systemd/system/ssh.service",
        },
        Symlink {
            path: "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
            target: "/lib/systemd/system/serial-getty@.service",
        },
        Symlink {
            path: "/etc/systemd/system/multi-user.target.wants/labnet-guest.service",
            target: "/etc/systemd/system/labnet-guest.service",
        },
        // Periodic jobs that only cost a TCG guest CPU (and make runs less repeatable).
        Symlink {
            path: "/etc/systemd/system/apt-daily.timer",
            target: "/dev/null",
        },
        Symlink {
            path: "/etc/systemd/system/apt-daily-upgrade.timer",
            target: "/dev/null",
        },
        Symlink {
            path: "/etc/systemd/system/e2scrub_all.timer",
            target: "/dev/null",
        },
        Symlink {
            path: "/etc/systemd/system/fstrim.timer",
            target: "/dev/null",
        },
        Remove {
            path: "/etc/hostname",
        },
        Remove {
            path: "/etc/ssh/ssh_host_rsa_key",
        },
        Remove {
            path: "/etc/ssh/ssh_host_rsa_key.pub",
        },
        Remove {
            path: "/etc/ssh/ssh_host_ecdsa_key",
        },
        Remove {
            path: "/etc/ssh/ssh_host_ecdsa_key.pub",
        },
        Remove {
            path: "/etc/ssh/ssh_host_ed25519_key",
        },
        Remove {
            path: "/etc/ssh/ssh_host_ed25519_key.pub",
        },
    ]
}

/// Writes the entries under `root` (the unpacked tree), replacing what is there.
pub fn apply(root: &Path, entries: &[Entry]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in entries {
        let rel = |p: &str| root.join(p.trim_start_matches('/'));
        match e {
            Entry::File { path, mode, text } => {
                let p = rel(path);
                mkparent(&p)?;
                remove(&p)?;
                std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| Error::io(&p, e))?;
            }
            Entry::Symlink { path, target } => {
                let p = rel(path);
                mkparent(&p)?;
                remove(&p)?;
                std::os::unix::fs::symlink(target, &p).map_err(|e| Error::io(&p, e))?;
            }
            Entry::Remove { path } => remove(&rel(path))?,
        }
    }
    Ok(())
}

fn mkparent(p: &Path) -> Result<()> {
    let d = p.parent().expect("entry paths are absolute");
    std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p, e)),
        _ => Ok(()),
    }
}

/// The entries as one text (for the golden file and `image build --dry-run` style reviews).
pub fn render(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        match e {
            Entry::File { path, mode, text } => {
                s.push_str(&format!("=== {path} (mode {mode:o})\n{text}"));
            }
            Entry::Symlink { path, target } => s.push_str(&format!("=== {path} -> {target}\n")),
            Entry::Remove { path } => s.push_str(&format!("=== rm {path}\n")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_guest_files() {
        crate::golden::check("guest-files.txt", &render(&entries()));
    }

    #[test]
    fn apply_writes_files_links_and_removes() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc/ssh")).unwrap();
        std::fs::write(r.join("etc/hostname"), "buildhost\n").unwrap();
        std::fs::write(r.join("etc/ssh/ssh_host_rsa_key"), "old").unwrap();
        std::os::unix::fs::symlink("/elsewhere", r.join("etc/resolv.conf")).unwrap();
        apply(r, &entries()).unwrap();
        assert!(!r.join("etc/hostname").exists());
        assert!(!r.join("etc/ssh/ssh_host_rsa_key").exists());
        assert_eq!(
            std::fs::read_link(r.join("etc/resolv.conf")).unwrap(),
            Path::new("../run/systemd/resolve/stub-resolv.conf")
        );
        let m = std::fs::metadata(r.join("usr/local/sbin/labnet-guest-setup")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        assert!(
            std::fs::read_to_string(r.join("etc/ssh/sshd_config.d/labnet.conf"))
                .unwrap()
                .contains("PasswordAuthentication no")
        );
        // Idempotent.
        apply(r, &entries()).unwrap();
    }

    #[test]
    fn setup_script_is_valid_sh() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        std::fs::write(&p, SETUP_SCRIPT).unwrap();
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
    }
}
