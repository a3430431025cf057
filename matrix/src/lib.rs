//! `labnet test FILE.toml`: a file of kernel test targets, each run as its own VM in a lab
//! (the vm library's `vm run`), up to `--jobs` at once, with a verdict per target
//! (PASS/FAIL/TIMEOUT/PANIC, or ERROR when its VM could not run), its duration, its console
//! kept when it did not pass, and a JUnit XML report.
//!
//! - [`file`]: the test file (`[defaults]`, `[[target]]`), checked before anything runs;
//! - [`run`]: one target as one VM, and the pool that runs them;
//! - [`report`]: the per-target lines, the summary and the JUnit XML.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod file;
pub mod report;
pub mod run;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error("--filter {pattern:?}: {message}")]
    Filter { pattern: String, message: String },
    #[error("{path}: {source}")]
    InFile { path: String, source: Box<Error> },
}

impl Error {
    pub fn field(field: &str, message: impl Into<String>) -> Error {
        Error::Field {
            field: field.to_string(),
            message: message.into(),
        }
    }
    fn in_file(self, path: &Path) -> Error {
        Error::InFile {
            path: path.display().to_string(),
            source: Box::new(self),
        }
    }
}

/// The targets of `file` whose name matches `filter` (all without one), each with the VM
/// options it runs with in `lab` (unless it names its own): every file it needs is checked
/// here, so a mistake stops the run before any VM starts.
pub fn plan(file: &Path, filter: Option<&str>, lab: &str) -> Result<Vec<run::Planned>, Error> {
    let re = filter
        .map(|f| {
            regex::Regex::new(f).map_err(|e| Error::Filter {
                pattern: f.to_string(),
                message: e.to_string(),
            })
        })
        .transpose()?;
    file::load(file)?
        .into_iter()
        .filter(|t| re.as_ref().is_none_or(|re| re.is_match(&t.name)))
        .map(|t| {
            let options = t.options(lab).map_err(|e| e.in_file(file))?;
            Ok(run::Planned { target: t, options })
        })
        .collect()
}
