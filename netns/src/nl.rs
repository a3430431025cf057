//! Small async helpers over rtnetlink, and [`with_netlink`], which runs them against one
//! namespace: the netlink socket is opened on a thread inside that namespace.
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkWireguard, RouteMessageBuilder};
use std::future::Future;
use std::net::Ipv4Addr;

use crate::nsfs::in_netns;
use crate::Error;

/// Runs `f(handle)` on a current-thread runtime inside namespace `ns` (None = labnet's own).
pub fn with_netlink<T, F, Fut>(ns: Option<&str>, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>>,
{
    in_netns(ns, move || netlink_here(f))
}

/// Runs `f(handle)` on a current-thread runtime in the calling thread's namespace, whatever
/// it is (e.g. a thread that unshared one of its own): [`tuntap::netlink::here`].
pub use tuntap::netlink::here as netlink_here;

pub fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |e| Error::Netlink { what, source: e }
}

/// True for "already exists" answers, which `up` treats as done (idempotent).
pub fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, Error> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(m) => Ok(m),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

pub async fn index_of(h: &Handle, name: &str) -> Result<u32, Error> {
    link_by_name(h, name)
        .await?
        .map(|m| m.header.index)
        .ok_or_else(|| Error::NoSuchLink { name: name.into() })
}

pub fn link_is_up(m: &LinkMessage) -> bool {
    m.header.flags.contains(LinkFlags::Up)
}

pub fn link_kind(m: &LinkMessage) -> Option<String> {
    use rtnetlink::packet_route::link::LinkInfo;
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

pub fn link_controller(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

pub async fn set_up(h: &Handle, name: &str) -> Result<(), Error> {
    let idx = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {name} up")))
}

pub async fn add_bridge(h: &Handle, name: &str) -> Result<bool, Error> {
    match h.link().add(LinkBridge::new(name).build()).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_exists(&e) => Ok(false),
        Err(e) => Err(nl(format!("create bridge {name}"))(e)),
    }
}

pub async fn add_veth(h: &Handle, name: &str, peer: &str) -> Result<(), Error> {
    h.link()
        .add(LinkVeth::new(name, peer).build())
        .execute()
        .await
        .map_err(nl(format!("create veth {name}/{peer}")))
}

/// Creates a kernel WireGuard link. `Ok(false)` when the kernel has no WireGuard support.
pub async fn add_wireguard(h: &Handle, name: &str) -> Result<bool, Error> {
    match h
        .link()
        .add(LinkWireguard::new(name).build())
        .execute()
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if is_errno(&e, libc::EOPNOTSUPP) || is_errno(&e, libc::EINVAL) => Ok(false),
        Err(e) => Err(nl(format!("create wireguard link {name}"))(e)),
    }
}

pub async fn del_link(h: &Handle, name: &str) -> Result<bool, Error> {
    let Some(m) = link_by_name(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(m.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
        Err(e) => Err(nl(format!("delete link {name}"))(e)),
    }
}

/// Moves a link into the namespace opened as `ns_fd`.
pub async fn move_to_netns(h: &Handle, name: &str, ns_fd: i32) -> Result<(), Error> {
    let idx = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).setns_by_fd(ns_fd).build())
        .execute()
        .await
        .map_err(nl(format!("move {name} into the lab namespace")))
}

/// Makes `name` a port of bridge `bridge`.
pub async fn set_controller(h: &Handle, name: &str, bridge: &str) -> Result<(), Error> {
    let (idx, br) = (index_of(h, name).await?, index_of(h, bridge).await?);
    h.link()
        .set(LinkUnspec::new_with_index(idx).controller(br).build())
        .execute()
        .await
        .map_err(nl(format!("attach {name} to {bridge}")))
}

pub async fn add_address(h: &Handle, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), Error> {
    let idx = index_of(h, name).await?;
    match h.address().add(idx, addr.into(), prefix).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_exists(&e) => Ok(()),
        Err(e) => Err(nl(format!("add {addr}/{prefix} to {name}"))(e)),
    }
}

pub async fn ipv4_addresses(h: &Handle, name: &str) -> Result<Vec<(Ipv4Addr, u8)>, Error> {
    let Some(link) = link_by_name(h, name).await? else {
        return Ok(vec![]);
    };
    let mut out = vec![];
    let mut s = h
        .address()
        .get()
        .set_link_index_filter(link.header.index)
        .execute();
    while let Some(m) = s.try_next().await.map_err(nl("list addresses"))? {
        for a in &m.attributes {
            if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = a {
                out.push((*ip, m.header.prefix_len));
            }
        }
    }
    Ok(out)
}

pub async fn add_default_route(h: &Handle, dev: &str, via: Ipv4Addr) -> Result<(), Error> {
    let idx = index_of(h, dev).await?;
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .output_interface(idx)
        .gateway(via)
        .build();
    match h.route().add(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_exists(&e) => Ok(()),
        Err(e) => Err(nl(format!("add default route via {via} dev {dev}"))(e)),
    }
}

/// The name of the link with index `idx`, if it exists.
pub async fn name_of(h: &Handle, idx: u32) -> Result<Option<String>, Error> {
    let mut s = h.link().get().match_index(idx).execute();
    let m = match s.try_next().await {
        Ok(m) => m,
        Err(e) if is_errno(&e, libc::ENODEV) => None,
        Err(e) => return Err(nl(format!("look up link {idx}"))(e)),
    };
    Ok(m.and_then(|m| {
        m.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n),
            _ => None,
        })
    }))
}

/// The IPv4 default route's (gateway, output ifindex), if any.
pub async fn default_route(h: &Handle) -> Result<Option<(Option<Ipv4Addr>, Option<u32>)>, Error> {
    let mut s = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(m) = s.try_next().await.map_err(nl("list routes"))? {
        if m.header.destination_prefix_length != 0 || m.header.table != 254 {
            continue;
        }
        let mut gw = None;
        let mut oif = None;
        for a in &m.attributes {
            match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        return Ok(Some((gw, oif)));
    }
    Ok(None)
}

pub async fn set_mtu(h: &Handle, name: &str, mtu: u32) -> Result<(), Error> {
    let idx = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl(format!("set mtu {mtu} on {name}")))
}

/// A route to `dest/prefix` out of `dev` (no gateway: a point-to-point WireGuard link), with
/// `src` as the preferred source of the lab host's own packets.
pub fn subnet_route(
    idx: u32,
    dest: Ipv4Addr,
    prefix: u8,
    src: Ipv4Addr,
) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dest, prefix)
        .output_interface(idx)
        .pref_source(src)
        .build()
}

pub async fn add_subnet_route(
    h: &Handle,
    dev: &str,
    dest: Ipv4Addr,
    prefix: u8,
    src: Ipv4Addr,
) -> Result<(), Error> {
    let idx = index_of(h, dev).await?;
    match h
        .route()
        .add(subnet_route(idx, dest, prefix, src))
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_exists(&e) => Ok(()),
        Err(e) => Err(nl(format!("add route {dest}/{prefix} dev {dev}"))(e)),
    }
}

/// Deletes the route to `dest/prefix` out of `dev`; a missing one is fine.
pub async fn del_subnet_route(
    h: &Handle,
    dev: &str,
    dest: Ipv4Addr,
    prefix: u8,
) -> Result<(), Error> {
    let idx = index_of(h, dev).await?;
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dest, prefix)
        .output_interface(idx)
        .build();
    match h.route().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
        Err(e) => Err(nl(format!("delete route {dest}/{prefix} dev {dev}"))(e)),
    }
}

/// One IPv4 route of the main table: destination, prefix length, output link index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFacts {
    pub dest: Ipv4Addr,
    pub prefix: u8,
    pub oif: Option<u32>,
}

/// The main table's IPv4 routes (the lab's: connected subnets, the default, peer subnets).
pub async fn routes(h: &Handle) -> Result<Vec<RouteFacts>, Error> {
    let mut s = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut out = vec![];
    while let Some(m) = s.try_next().await.map_err(nl("list routes"))? {
        if m.header.table != 254 {
            continue;
        }
        let mut r = RouteFacts {
            dest: Ipv4Addr::UNSPECIFIED,
            prefix: m.header.destination_prefix_length,
            oif: None,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => r.dest = *ip,
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                _ => {}
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// A link's MTU, if it exists.
pub async fn mtu_of(h: &Handle, name: &str) -> Result<Option<u32>, Error> {
    Ok(link_by_name(h, name).await?.and_then(|m| {
        m.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(m),
            _ => None,
        })
    }))
}
