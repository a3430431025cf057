//! One rtnetlink connection on a current-thread runtime, for code that works inside a lab's
//! namespace: [`here`] in the calling thread's namespace, [`in_netns`] on a throwaway thread
//! moved into a named one (the thread, not the process, moves; it ends with the work). The
//! lab core (`netns`) and the VM's tap ([`crate::tap`]) both use these, each with its own
//! error type (any `E: From<Error>`).
use rtnetlink::Handle;
use std::future::Future;

use crate::Error;

/// Runs `f(handle)` on a current-thread runtime in the calling thread's namespace, whatever
/// it is (e.g. a thread that entered a lab's, or unshared one of its own).
pub fn here<T, E, F, Fut>(f: F) -> Result<T, E>
where
    E: From<Error>,
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| E::from(Error::io("tokio runtime", e)))?;
    rt.block_on(async move {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| E::from(Error::io("netlink socket", e)))?;
        let task = tokio::spawn(conn);
        let out = f(handle).await;
        task.abort();
        out
    })
}

/// Runs [`here`]`(f)` on a fresh thread inside lab `lab`'s namespace (/run/netns/LAB).
pub fn in_netns<T, E, F, Fut>(lab: &str, f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Error> + Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>>,
{
    let name = lab.to_string();
    std::thread::spawn(move || {
        model::netns::enter(&name).map_err(|e| E::from(Error::from(e)))?;
        here(f)
    })
    .join()
    .map_err(|_| E::from(Error::WorkerPanicked { lab: lab.into() }))?
}
