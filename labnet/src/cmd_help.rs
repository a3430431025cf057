//! `labnet completions SHELL` (clap_complete) and `labnet man` (clap_mangen), both generated
//! from the same clap definition the parser uses, so they cannot drift from it.
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;

pub const COMPLETIONS_EXAMPLES: &str = "\
Install (bash, zsh, fish):
  labnet completions bash > /etc/bash_completion.d/labnet      # or ~/.local/share/bash-completion/completions/labnet
  labnet completions zsh > /usr/local/share/zsh/site-functions/_labnet
  labnet completions fish > ~/.config/fish/completions/labnet.fish";

pub const MAN_EXAMPLES: &str = "\
Examples:
  labnet man | man -l -                                  # read it now
  labnet man --dir /usr/local/share/man/man1 && mandb   # install labnet.1, labnet-up.1, ...";

#[derive(Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    pub shell: Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write labnet.1 and one labnet-COMMAND.1 per subcommand into DIR instead of printing
    /// labnet.1 to stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(mut cmd: clap::Command, a: CompletionsArgs) -> Result<()> {
    use clap_complete::{generate, shells};
    let out = &mut std::io::stdout();
    match a.shell {
        Shell::Bash => generate(shells::Bash, &mut cmd, "labnet", out),
        Shell::Zsh => generate(shells::Zsh, &mut cmd, "labnet", out),
        Shell::Fish => generate(shells::Fish, &mut cmd, "labnet", out),
    }
    Ok(())
}

pub fn man(cmd: clap::Command, a: ManArgs) -> Result<()> {
    let Some(dir) = a.dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        return Ok(out.flush()?);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("--dir {}", dir.display()))?;
    clap_mangen::generate_to(cmd, &dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    println!("man pages written to {}", dir.display());
    Ok(())
}
