//! `labnet logs [LAB] [dhcpd|dns|wireguard-go|VM] [-f]`: the logs of a lab's daemons (the
//! files `up` writes under /run/labnet/LAB, each line stamped with its UTC time; the
//! journal when systemd runs them) and of its VMs (the serial console, stamped by the guest
//! kernel).
use anyhow::{bail, Result};
use clap::Args;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::ctx::Ctx;

pub const EXAMPLES: &str = "\
Examples:
  labnet logs                   # dhcpd and dns of the default lab, each line prefixed by its source
  labnet logs uxlab dhcpd -f    # follow lab uxlab's DHCP server
  labnet logs --lab uxlab vm1   # VM vm1's serial console (its boot and the guest's output)";

const DAEMONS: [&str; 3] = ["dhcpd", "dns", "wireguard-go"];

#[derive(Args)]
pub struct LogsArgs {
    /// [LAB] [WHAT]: WHAT is dhcpd, dns, wireguard-go or a VM name (default: every daemon).
    /// With --lab or $LABNET_LAB, a single word is WHAT.
    #[arg(value_name = "LAB|WHAT", num_args = 0..=2)]
    pub words: Vec<String>,
    /// Keep printing lines as they are written (like tail -f); Ctrl-C ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines of each log.
    #[arg(long, short = 'n', value_name = "N")]
    pub lines: Option<usize>,
}

struct Source {
    label: String,
    path: PathBuf,
}

pub fn logs(ctx: &Ctx, a: LogsArgs) -> Result<()> {
    let (lab_word, what) = match a.words.as_slice() {
        [] => (None, None),
        [one] if ctx.given(None)?.is_some() => (None, Some(one.clone())),
        [one] => (Some(one.clone()), None),
        [lab, what] => (Some(lab.clone()), Some(what.clone())),
        _ => unreachable!("clap allows at most 2"),
    };
    let lab = ctx.lab_name(lab_word.as_deref())?;
    let run = netns::paths::lab_run_dir(&lab);
    let sources: Vec<Source> = match what.as_deref() {
        None => DAEMONS
            .iter()
            .map(|d| Source {
                label: d.to_string(),
                path: run.join(format!("{d}.log")),
            })
            .filter(|s| s.path.exists())
            .collect(),
        Some(d) if DAEMONS.contains(&d) => vec![Source {
            label: d.into(),
            path: run.join(format!("{d}.log")),
        }],
        Some(vm) => {
            let dir = vm::state::vm_dir(&lab, vm);
            if !dir.exists() {
                bail!(
                    "lab {lab} has no daemon or VM {vm:?} (daemons: {}; VMs: `labnet vm list {lab}`)",
                    DAEMONS.join(", ")
                );
            }
            vec![Source {
                label: vm.into(),
                path: dir.join("serial.log"),
            }]
        }
    };
    if sources.iter().all(|s| !s.path.exists()) {
        return journal_or_explain(&lab, what.as_deref(), &a);
    }
    let prefix = sources.len() > 1;
    let width = sources.iter().map(|s| s.label.len()).max().unwrap_or(0);
    let mut tails: Vec<Tail> = sources
        .into_iter()
        .map(|s| Tail {
            prefix: prefix.then(|| format!("{:<width$} | ", s.label)),
            path: s.path,
            pos: 0,
            partial: vec![],
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for t in &mut tails {
        t.print_existing(&mut out, a.lines)?;
    }
    out.flush()?;
    if !a.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        for t in &mut tails {
            t.print_new(&mut out)?;
        }
        out.flush()?;
    }
}

/// No log file: under systemd the journal has the daemons' output.
fn journal_or_explain(lab: &str, what: Option<&str>, a: &LogsArgs) -> Result<()> {
    let units: Vec<String> = match what {
        Some("dhcpd") => vec![units::instance(units::DHCPD_TEMPLATE, lab)],
        Some("dns") => vec![units::instance(units::DNS_TEMPLATE, lab)],
        None => vec![
            units::instance(units::DHCPD_TEMPLATE, lab),
            units::instance(units::DNS_TEMPLATE, lab),
        ],
        Some(_) => vec![],
    };
    let root = std::path::Path::new("/");
    if !units.is_empty()
        && units::systemd_running(root)
        && units::installed_labs(root)
            .unwrap_or_default()
            .iter()
            .any(|l| l == lab)
    {
        let mut cmd = std::process::Command::new("journalctl");
        cmd.args(["-o", "short-iso", "--no-pager"]);
        for u in &units {
            cmd.args(["-u", u]);
        }
        if a.follow {
            cmd.arg("-f");
        }
        if let Some(n) = a.lines {
            cmd.args(["-n", &n.to_string()]);
        }
        let st = cmd.status()?;
        if !st.success() {
            bail!("journalctl {}", st);
        }
        return Ok(());
    }
    bail!(
        "no logs for lab {lab}{}: nothing under {} (is it up? `labnet list`)",
        what.map(|w| format!(" ({w})")).unwrap_or_default(),
        netns::paths::lab_run_dir(lab).display()
    )
}

struct Tail {
    prefix: Option<String>,
    path: PathBuf,
    pos: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn print_existing(&mut self, out: &mut dyn Write, last: Option<usize>) -> Result<()> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Ok(());
        };
        let mut buf = vec![];
        f.read_to_end(&mut buf)?;
        self.pos = buf.len() as u64;
        let text = String::from_utf8_lossy(&buf).replace('\r', "");
        let lines: Vec<&str> = text.lines().collect();
        let skip = last.map_or(0, |n| lines.len().saturating_sub(n));
        for l in &lines[skip..] {
            self.line(out, l.as_bytes())?;
        }
        Ok(())
    }

    fn print_new(&mut self, out: &mut dyn Write) -> Result<()> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Ok(());
        };
        let len = f.metadata()?.len();
        if len < self.pos {
            // Truncated or replaced (a VM's next boot): start over.
            self.pos = 0;
            self.partial.clear();
        }
        f.seek(SeekFrom::Start(self.pos))?;
        let mut buf = vec![];
        f.read_to_end(&mut buf)?;
        self.pos += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let mut l: Vec<u8> = self.partial.drain(..=i).collect();
            l.pop();
            if l.last() == Some(&b'\r') {
                l.pop();
            }
            self.line(out, &l)?;
        }
        Ok(())
    }

    fn line(&self, out: &mut dyn Write, l: &[u8]) -> Result<()> {
        if let Some(p) = &self.prefix {
            out.write_all(p.as_bytes())?;
        }
        out.write_all(l)?;
        out.write_all(b"\n")?;
        Ok(())
    }
}
