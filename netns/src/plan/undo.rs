//! The order `down` undoes a record in: apart from the planning because it needs the
//! record only, not the config.
use crate::state::Resource;

/// Pure: the order `down` undoes a record in. wireguard-go first: it only detaches from its
/// (persistent) TUN while nothing else holds the rtnl lock. Then the rest, newest first. The
/// lab's namespace last: the kernel tears it down (and every link and table in it)
/// asynchronously, holding the rtnl lock for tens of ms, which netlink requests for the other
/// steps would otherwise queue behind.
pub fn undo_order(resources: &[Resource]) -> Vec<Resource> {
    let wg = resources
        .iter()
        .filter(|r| matches!(r, Resource::WgUserspace { .. }));
    let rest = resources
        .iter()
        .rev()
        .filter(|r| !matches!(r, Resource::WgUserspace { .. } | Resource::Netns { .. }));
    let netns = resources
        .iter()
        .rev()
        .filter(|r| matches!(r, Resource::Netns { .. }));
    wg.chain(rest).chain(netns).cloned().collect()
}
