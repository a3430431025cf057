//! Runs a [`crate::plan`] over the [`Net`] trait: each step's undo is recorded (and saved)
//! before the step is made, so a crash half-way leaves a record `down` can undo; and undoes a
//! record in [`undo_order`]. The system implementation is [`crate::system::SystemNet`]; tests
//! use a recording fake.
use std::net::Ipv4Addr;
use std::path::Path;

use crate::config::{Ipv4Cidr, Peer, Peering, Wireguard};
use crate::plan::{undo_order, Action, DaemonSpec, Step};
use crate::state::{LabState, Resource};
use crate::Error;

/// The changes a plan makes, one method per kind of action, and the undo of a record.
/// `netns: None` is labnet's own namespace.
pub trait Net {
    fn create_netns(&mut self, name: &str) -> Result<(), Error>;
    fn create_wireguard_link(&mut self, iface: &str) -> Result<(), Error>;
    fn create_tun(&mut self, iface: &str) -> Result<(), Error>;
    /// Starts wireguard-go for `iface`; returns its pid.
    fn start_wireguard_go(&mut self, iface: &str, log: &Path) -> Result<u32, Error>;
    fn wait_wireguard_go(&mut self, iface: &str) -> Result<(), Error>;
    fn configure_wireguard(&mut self, wg: &Wireguard, userspace: bool) -> Result<(), Error>;
    /// The peering link's private key and listen port; the kernel link is in `netns`.
    fn configure_peering_link(
        &mut self,
        p: &Peering,
        userspace: bool,
        netns: Option<&str>,
    ) -> Result<(), Error>;
    /// Adds or updates one peer on WireGuard link `iface` (a kernel link is in `netns`).
    fn add_wg_peer(
        &mut self,
        netns: &str,
        iface: &str,
        peer: &Peer,
        userspace: bool,
    ) -> Result<(), Error>;
    fn remove_wg_peer(
        &mut self,
        netns: &str,
        iface: &str,
        public_key: &str,
        userspace: bool,
    ) -> Result<(), Error>;
    fn add_bridge(&mut self, netns: &str, name: &str) -> Result<(), Error>;
    fn add_veth(&mut self, name: &str, peer: &str) -> Result<(), Error>;
    fn move_link(&mut self, link: &str, netns: &str) -> Result<(), Error>;
    fn link_up(&mut self, netns: Option<&str>, link: &str) -> Result<(), Error>;
    fn add_address(&mut self, netns: Option<&str>, link: &str, a: Ipv4Cidr) -> Result<(), Error>;
    fn add_default_route(&mut self, netns: &str, link: &str, via: Ipv4Addr) -> Result<(), Error>;
    fn set_mtu(&mut self, netns: &str, link: &str, mtu: u32) -> Result<(), Error>;
    fn add_route(
        &mut self,
        netns: &str,
        link: &str,
        dest: Ipv4Cidr,
        src: Ipv4Addr,
    ) -> Result<(), Error>;
    fn del_route(&mut self, netns: &str, link: &str, dest: Ipv4Cidr) -> Result<(), Error>;
    fn sysctl(&mut self, netns: Option<&str>, path: &str, value: &str) -> Result<(), Error>;
    /// Adds `ruleset` (table `table`) in `netns`; with `replace`, a table of that name that is
    /// there is deleted first.
    fn nft_table(
        &mut self,
        netns: Option<&str>,
        table: &str,
        ruleset: nftables::schema::Nftables<'static>,
        replace: bool,
    ) -> Result<(), Error>;
    fn make_dir(&mut self, path: &Path) -> Result<(), Error>;
    fn write_file(&mut self, path: &Path, text: &str, save_to: Option<&Path>) -> Result<(), Error>;
    /// Starts a daemon in lab `lab` and waits for its READY; returns its pid.
    fn start_daemon(&mut self, lab: &str, daemon: &DaemonSpec) -> Result<u32, Error>;
    /// Has the running daemon (`pid`) read its config again; returns its pid afterwards (a
    /// new one when it had to be restarted).
    fn reload_daemon(
        &mut self,
        lab: &str,
        daemon: &DaemonSpec,
        pid: Option<u32>,
    ) -> Result<u32, Error>;
    /// Undoes one record ("already gone" is done).
    fn remove(&mut self, r: &Resource) -> Result<(), Error>;
}

/// Where the executor writes each step's undo before making the step.
pub trait Journal {
    /// Records `r` (durably) before what it undoes is made.
    fn record(&mut self, r: Resource) -> Result<(), Error>;
    /// Replaces the record of the same process (by name) with `r`, e.g. once its pid is known.
    fn settle(&mut self, r: Resource) -> Result<(), Error>;
}

/// Two records of the same process (a restarted daemon, a wireguard-go once it has a pid).
fn same_process(a: &Resource, b: &Resource) -> bool {
    match (a, b) {
        (Resource::Daemon { name: x, .. }, Resource::Daemon { name: y, .. }) => x == y,
        (Resource::WgUserspace { iface: x, .. }, Resource::WgUserspace { iface: y, .. }) => x == y,
        _ => false,
    }
}

impl Journal for LabState {
    /// A record that is there already (a link made again after it went missing) is kept once.
    fn record(&mut self, r: Resource) -> Result<(), Error> {
        if self.resources.contains(&r) {
            return Ok(());
        }
        Ok(LabState::record(self, r)?)
    }
    fn settle(&mut self, r: Resource) -> Result<(), Error> {
        match self
            .resources
            .iter_mut()
            .rev()
            .find(|x| same_process(x, &r))
        {
            Some(x) => *x = r,
            None => self.resources.push(r),
        }
        Ok(self.save()?)
    }
}

/// An in-memory record (tests, dry runs).
impl Journal for Vec<Resource> {
    fn record(&mut self, r: Resource) -> Result<(), Error> {
        if !self.contains(&r) {
            self.push(r);
        }
        Ok(())
    }
    fn settle(&mut self, r: Resource) -> Result<(), Error> {
        match self.iter_mut().rev().find(|x| same_process(x, &r)) {
            Some(x) => *x = r,
            None => self.push(r),
        }
        Ok(())
    }
}

/// Makes one action; a started process comes back as its record, pid and all.
fn act(net: &mut dyn Net, a: &Action) -> Result<Option<Resource>, Error> {
    match a {
        Action::CreateNetns { name } => net.create_netns(name)?,
        Action::CreateWireguardLink { iface } => net.create_wireguard_link(iface)?,
        Action::CreateTun { iface } => net.create_tun(iface)?,
        Action::StartWireguardGo { iface, log } => {
            let pid = net.start_wireguard_go(iface, log)?;
            return Ok(Some(Resource::WgUserspace {
                iface: iface.clone(),
                pid: Some(pid),
            }));
        }
        Action::WaitWireguardGo { iface } => net.wait_wireguard_go(iface)?,
        Action::ConfigureWireguard {
            wireguard,
            userspace,
        } => net.configure_wireguard(wireguard, *userspace)?,
        Action::ConfigurePeeringLink {
            peering,
            userspace,
            netns,
        } => net.configure_peering_link(peering, *userspace, netns.as_deref())?,
        Action::AddWgPeer {
            netns,
            iface,
            peer,
            userspace,
        } => net.add_wg_peer(netns, iface, peer, *userspace)?,
        Action::RemoveWgPeer {
            netns,
            iface,
            public_key,
            userspace,
        } => net.remove_wg_peer(netns, iface, public_key, *userspace)?,
        Action::AddBridge { netns, name } => net.add_bridge(netns, name)?,
        Action::AddVeth { name, peer } => net.add_veth(name, peer)?,
        Action::MoveLink { link, netns } => net.move_link(link, netns)?,
        Action::LinkUp { netns, link } => net.link_up(netns.as_deref(), link)?,
        Action::AddAddress {
            netns,
            link,
            address,
        } => net.add_address(netns.as_deref(), link, *address)?,
        Action::DefaultRoute { netns, link, via } => net.add_default_route(netns, link, *via)?,
        Action::SetMtu { netns, link, mtu } => net.set_mtu(netns, link, *mtu)?,
        Action::AddRoute {
            netns,
            link,
            dest,
            src,
        } => net.add_route(netns, link, *dest, *src)?,
        Action::DelRoute { netns, link, dest } => net.del_route(netns, link, *dest)?,
        Action::Sysctl { netns, path, value } => net.sysctl(netns.as_deref(), path, value)?,
        Action::NftLabTable {
            netns,
            bridge,
            uplink,
            peering,
            replace,
        } => net.nft_table(
            Some(netns),
            crate::nft::LAB_TABLE,
            crate::nft::lab_table_peered(bridge, uplink, peering.as_deref()),
            *replace,
        )?,
        Action::NftPeeringTable {
            netns,
            peering,
            replace,
        } => net.nft_table(
            Some(netns),
            crate::nft::PEERING_TABLE,
            crate::nft::peering_table(peering),
            *replace,
        )?,
        Action::NftHostTable {
            lab,
            host_interface,
            replace,
        } => net.nft_table(
            None,
            &crate::nft::host_table(lab),
            crate::nft::host_masquerade(lab, host_interface),
            *replace,
        )?,
        Action::MakeDir { path } => net.make_dir(path)?,
        Action::WriteFile {
            path,
            text,
            save_to,
        } => net.write_file(path, text, save_to.as_deref())?,
        Action::StartDaemon { lab, daemon } => {
            let pid = net.start_daemon(lab, daemon)?;
            return Ok(Some(Resource::Daemon {
                name: daemon.name.clone(),
                pid: Some(pid),
                exe: daemon.argv.join("\0"),
            }));
        }
        Action::ReloadDaemon { lab, daemon, pid } => {
            let pid = net.reload_daemon(lab, daemon, *pid)?;
            return Ok(Some(Resource::Daemon {
                name: daemon.name.clone(),
                pid: Some(pid),
                exe: daemon.argv.join("\0"),
            }));
        }
    }
    Ok(None)
}

/// Runs the steps in order, recording each one's undo before making it; the first failure
/// stops it, naming the step (what was made stays recorded for the caller to undo).
pub fn run(net: &mut dyn Net, steps: &[Step], journal: &mut dyn Journal) -> Result<(), Error> {
    for s in steps {
        if let Some(u) = &s.undo {
            journal.record(u.clone())?;
        }
        let done = act(net, &s.action).map_err(|e| match s.drift {
            Some(_) => Error::Repair {
                step: s.describe(),
                source: Box::new(e),
            },
            None => Error::Step {
                step: s.describe(),
                source: Box::new(e),
            },
        })?;
        if let Some(r) = done {
            journal.settle(r)?;
        }
    }
    Ok(())
}

/// Undoes every record of `st` in [`undo_order`], removing the state file when all went.
/// Records that could not be undone stay (and the error names each), so a later `down` can
/// retry.
pub fn undo(net: &mut dyn Net, st: &mut LabState) -> Result<(), Error> {
    let order = undo_order(&st.resources);
    st.resources.clear();
    let mut failed = vec![];
    for r in order {
        if let Err(e) = net.remove(&r) {
            failed.push((r, e.to_string()));
        }
    }
    if failed.is_empty() {
        st.remove_file()?;
        return Ok(());
    }
    failed.reverse();
    let errors: Vec<String> = failed.iter().rev().map(|(_, e)| e.clone()).collect();
    st.resources = failed.into_iter().map(|(r, _)| r).collect();
    st.complete = false;
    st.save()?;
    Err(Error::Undo {
        errors: errors.join("; "),
    })
}
