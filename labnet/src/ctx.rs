//! What every command shares: which lab (one way to choose it, the same for every command)
//! and the global flags.
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

/// The environment variable naming the lab when neither LAB nor --lab is given.
pub const LAB_ENV: &str = "LABNET_LAB";

/// Options every command accepts, before or after the subcommand.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// The lab to work on (same as the positional LAB where a command has one)
    /// [env: LABNET_LAB; default: the lab of --config, else "sepian"].
    #[arg(long = "lab", value_name = "LAB", global = true)]
    pub lab_flag: Option<String>,
    /// The lab's config file [default: /etc/labnet/LAB.toml, else the lab's record in
    /// /run/labnet, else the embedded default lab "sepian"].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// On failure, print the full error with its backtrace (RUST_BACKTRACE=1 captures it).
    #[arg(long, global = true)]
    pub debug: bool,
}

/// The lab chosen for this run. Precedence: the positional LAB, then --lab (they must agree
/// when both are given), then $LABNET_LAB, then the name in --config, then "sepian".
#[derive(Debug, Clone)]
pub struct Ctx {
    pub lab: Option<String>,
    pub config: Option<PathBuf>,
}

impl Ctx {
    pub fn new(g: &GlobalArgs) -> Ctx {
        Ctx {
            lab: g.lab_flag.clone(),
            config: g.config.clone(),
        }
    }

    pub fn config(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// The lab name given on the command line or in the environment, if any.
    pub fn given(&self, positional: Option<&str>) -> Result<Option<String>> {
        if let (Some(p), Some(f)) = (positional, &self.lab) {
            if p != f {
                return Err(crate::report::Usage(format!(
                    "two labs given: LAB {p:?} and --lab {f:?}; give one"
                ))
                .into());
            }
        }
        Ok(positional
            .map(String::from)
            .or_else(|| self.lab.clone())
            .or_else(|| std::env::var(LAB_ENV).ok().filter(|s| !s.is_empty())))
    }

    /// The chosen lab, loaded and validated; what is odd but allowed is warned about.
    pub fn load(&self, positional: Option<&str>) -> Result<netns::Lab> {
        let lab = netns::Lab::load(self.given(positional)?.as_deref(), self.config())?;
        for w in lab.warnings() {
            eprintln!("labnet: warning: {w}");
        }
        Ok(lab)
    }

    /// The chosen lab's name; reads the config only when no name is given.
    pub fn lab_name(&self, positional: Option<&str>) -> Result<String> {
        match self.given(positional)? {
            Some(n) => Ok(n),
            None => Ok(netns::Lab::load(None, self.config())?.name),
        }
    }
}
