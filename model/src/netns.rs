//! Entering a lab's network namespace (`/run/netns/LAB`, as `ip netns` and `labnet up` make
//! it): the one way the daemons and `labnet` helpers do it.
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{paths, Error};

/// Moves the calling thread into the namespace bound at `path`. Call it before any other
/// thread or runtime exists when the whole process should follow: setns moves only the
/// calling thread, and threads made later inherit it.
pub fn enter_path(path: &Path) -> Result<(), Error> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    enter_file(&f, path)
}

/// [`enter_path`] for a namespace file already open (`path` names it in the error), e.g.
/// opened by a parent thread before it starts the one that moves.
pub fn enter_file(f: &std::fs::File, path: &Path) -> Result<(), Error> {
    // SAFETY: setns(2) takes an fd that `f` keeps open for the call and a flag; no memory.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::Setns {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// [`enter_path`] for lab `lab`.
pub fn enter(lab: &str) -> Result<(), Error> {
    enter_path(&paths::netns_path(lab))
}
