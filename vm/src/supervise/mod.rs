//! Starting a VM and staying with it. [`prepare`] checks the input and decides everything
//! (pure except for building the initramfs / overlay); [`launch`] registers the DHCP
//! reservation, makes the tap, spawns QEMU *inside* the lab namespace and supervises it:
//! `run` output is streamed from the serial log, signals turn into a clean stop, and the tap
//! is removed when QEMU ends, however it ends. QEMU gets PR_SET_PDEATHSIG, so it does not
//! outlive a killed supervisor; a tap left by a SIGKILLed supervisor is removed by the next
//! `vm start`/`stop`/`list` of that VM.
//!
//! One file per step: [`options`] (what was asked), [`precheck`] (input checks),
//! [`prepare`] (the decisions, the initramfs), [`overlay`] (qemu-img overlays), [`launch`]
//! (the VM's life and cleanup), [`spawn`] (QEMU in the namespace), [`watch`] (the
//! supervision loop), [`run_tail`] (the serial log of `vm run`), [`daemonize`].
mod daemonize;
mod launch;
mod options;
mod overlay;
mod precheck;
mod prepare;
mod run_tail;
mod spawn;
mod watch;

pub use daemonize::daemonize;
pub use launch::{failed_run_log, launch, Mode, Outcome};
pub use options::{Options, Prepared};
pub use precheck::{precheck, resolve_bridge};
pub use prepare::{guess_modules_dir, prepare};
pub use run_tail::Timings;
pub use spawn::tail_lines;
pub use watch::request_stop;
