//! mountgen: CephFS kernel mounts from `ceph mon dump`.
//!
//! Seed 000's `kmount.sh` ssh-es to the cluster, pipes `ceph mon dump --format=json` through
//! jq and calls `mount -t ceph NAME@FSID.FS=/ -o mon_addr=a/b/c,ms_mode=crc,…`. This crate is
//! that translation as a library:
//!
//! 1. [`monmap::parse`] reads JSON / json-pretty / quorum_status JSON, plain-text `mon dump`,
//!    or a ceph.conf `mon_host` line into a [`MonMap`].
//! 2. [`plan::build`] turns a [`MonMap`] and a [`MountRequest`] into a [`MountPlan`]: the
//!    exact mount(2) source and data, for the new (5.17+) or old device syntax, choosing
//!    addresses the way mount.ceph does.
//! 3. [`render`] prints the plan as a shell command, fstab line, systemd `.mount` unit or JSON;
//!    the secret is redacted unless asked.
//! 4. [`kconfig`] holds the CephFS kernel config fragment of seeds 000/001.
//!
//! ```
//! use mountgen::{monmap, plan::{self, MountRequest, Syntax, Auth}};
//! let dump = r#"{"fsid":"0d11e97a-bb59-47ec-9a31-a3ee664e88ef","mons":[{"rank":0,"name":"a",
//!   "public_addrs":{"addrvec":[{"type":"v2","addr":"10.0.0.1:3300","nonce":0},
//!   {"type":"v1","addr":"10.0.0.1:6789","nonce":0}]}}],"quorum":[0]}"#;
//! let map = monmap::parse(dump, "example").unwrap();
//! let mut req = MountRequest::new("fs", Some("a"), Syntax::New);
//! req.auth = Auth::Key;
//! let p = plan::build(&map, &req).unwrap();
//! assert_eq!(p.source, "fs@0d11e97a-bb59-47ec-9a31-a3ee664e88ef.a=/");
//! assert_eq!(p.data(false), "mon_addr=10.0.0.1:3300,ms_mode=prefer-crc,name=fs,key=client.fs");
//! ```
//!
//! # kmount
//!
//! `src/bin/kmount.rs` is a small guest-side binary (no clap, no async) that reads the dump
//! from a file, stdin or a command, puts the secret into the kernel keyring with add_key(2)
//! and calls mount(2) itself. Run `kmount --help` for its options. It is built static so it
//! can be copied into a busybox initramfs:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p mountgen --bin kmount --target x86_64-unknown-linux-gnu
//! # -> target/x86_64-unknown-linux-gnu/release/kmount (static-pie; `ldd` says "statically linked")
//! ```
//!
//! (`--target` must be given so build scripts and proc-macros are not linked crt-static.
//! kmount resolves no host names, so glibc's static NSS caveat does not apply.)
//!
//! In a guest, seed 000's kmount.sh becomes:
//!
//! ```text
//! kmount --mon-dump-cmd "ssh HOST 'cd ceph/build && . ./vstart_environment.sh && ceph mon dump --format=json'" \
//!        --keyring /etc/ceph/keyring --name fs --fs a --preset testing --ms-mode crc \
//!        --conf-out /etc/ceph/ceph.conf --debug /mnt
//! ```
//!
//! Steps, each printed by `--dry-run` instead of done: read the map (file, stdin or command),
//! read the secret (keyring, key file or stdin; never argv), pick the syntax (the ceph
//! module's `mount_syntax_v2` parameter, else kernel ≥ 5.17), `modprobe ceph` unless
//! /proc/filesystems has it (and `gcm` for the secure modes), add_key(2) "ceph"/`client.NAME`
//! into the process keyring and pass `key=client.NAME` (falling back to `secret=` with a
//! warning when the key type is missing), write the minimal ceph.conf, enable dynamic debug,
//! create the mount point, mount(2). Errors name what is missing (no v2 address for
//! ms_mode=crc, fsid mismatch, unreadable key, no such fs with `--fs-ls`).
//!
//! Measured in a TCG guest (Debian 6.1, busybox): ms_mode secure/prefer-secure needs the
//! crypto modules gf128mul, ghash-generic, ctr, gcm (aes is built in there).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod addr;
pub mod kconfig;
pub mod monmap;
pub mod plan;
pub mod render;
pub mod secret;
pub mod sys;

pub use addr::{AddrType, MonAddr};
pub use monmap::{Mon, MonMap};
pub use plan::{Auth, MountPlan, MountRequest, MsMode, Syntax};
pub use secret::Secret;

/// Everything that can go wrong; each message names the input, field or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input as a whole is unusable.
    #[error("{origin}: {msg}")]
    Input { origin: String, msg: String },
    /// A field of the input is missing or malformed.
    #[error("{origin}: {field}: {msg}")]
    Field {
        origin: String,
        field: String,
        msg: String,
    },
    /// A request parameter is invalid.
    #[error("{field}: {msg}")]
    Request { field: String, msg: String },
    #[error("fsid mismatch: --fsid is {given} but the mon dump says {dump}")]
    FsidMismatch { given: String, dump: String },
    #[error("no fsid: the input has none and no --fsid was given (the new syntax needs it)")]
    NoFsid,
    #[error("quorum-only: the input has no quorum list (use the JSON dump or quorum_status)")]
    NoQuorum,
    #[error("no {kind} mon address: {why}")]
    NoAddr { kind: &'static str, why: String },
    #[error("no such fs {fs:?}: {known}")]
    NoSuchFs { fs: String, known: String },
    /// The secret could not be read or is not a ceph key.
    #[error("unreadable key in {origin}: {msg}")]
    Key { origin: String, msg: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
