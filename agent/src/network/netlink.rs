//! The node network's requests to the kernel, over rtnetlink: links
//! (bridges, veth pairs, their aliases, masters and flags), IPv4 addresses,
//! routes and neighbours, and dumps of what the host holds. A synchronous
//! NETLINK_ROUTE socket, either in the agent's network namespace or, for a
//! container's `eth0`, opened inside the container's ([`Netlink::open_in`]).
//! One request is one system call each way: attaching a container costs
//! microseconds, where running `ip` and `nsenter` cost a process each.
//!
//! Only the kernel's stable ABI is used (`linux/rtnetlink.h`,
//! `linux/if_link.h`, `linux/neighbour.h`); messages are built and read here,
//! with the layouts written out beside them.

use super::inventory::{Address, Link, Route};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

// Message types and flags (linux/netlink.h, linux/rtnetlink.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_DELNEIGH: u16 = 29;

// Attributes.
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const NDA_DST: u16 = 1;

const IFF_UP: u32 = 0x1;
const AF_INET: u8 = libc::AF_INET as u8;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
/// The protocol `ip route add` marks routes with when it is given none.
pub const RTPROT_BOOT: u8 = 3;

/// A request the kernel refused, with what it was.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {what}: {source}")]
pub struct NetlinkError {
    pub what: String,
    pub source: io::Error,
}

impl NetlinkError {
    fn new(what: impl Into<String>, source: io::Error) -> NetlinkError {
        NetlinkError {
            what: what.into(),
            source,
        }
    }

    /// The kernel's errno, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// Appends attribute `kind` holding `data` (struct nlattr: u16 len, u16
/// type, the data, padded to 4 bytes).
fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Appends a nested attribute whose contents `fill` writes.
fn nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&kind.to_ne_bytes());
    fill(buf);
    pad(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// A NUL-terminated string, as IFLA_IFNAME and IFLA_INFO_KIND take them.
fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// struct ifinfomsg: family, pad, type (u16), index (i32), flags, change.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut v = vec![0u8, 0, 0, 0];
    v.extend_from_slice(&(index as i32).to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&change.to_ne_bytes());
    v
}

/// struct ifaddrmsg: family, prefix length, flags, scope, index (u32).
fn ifaddrmsg(prefix_len: u8, index: u32) -> Vec<u8> {
    let mut v = vec![AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE];
    v.extend_from_slice(&index.to_ne_bytes());
    v
}

/// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
/// type, flags (u32).
fn rtmsg(dst_len: u8, protocol: u8) -> Vec<u8> {
    let mut v = vec![
        AF_INET,
        dst_len,
        0,
        0,
        RT_TABLE_MAIN,
        protocol,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ];
    v.extend_from_slice(&0u32.to_ne_bytes());
    v
}

/// The attributes after a fixed header of `header` bytes: (type, data).
fn attrs(payload: &[u8], header: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = header;
    while at + 4 <= payload.len() {
        let len = u16::from_ne_bytes([payload[at], payload[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([payload[at + 2], payload[at + 3]]) & 0x3fff;
        if len < 4 || at + len > payload.len() {
            break;
        }
        out.push((kind, &payload[at + 4..at + len]));
        at += (len + 3) & !3;
    }
    out
}

fn string(data: &[u8]) -> String {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    data.get(at..at + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

fn ipv4(data: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// A rtnetlink socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// A socket in this thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: socket(2) with constant arguments; the result is checked
        // and owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 0 })
    }

    /// A socket in the network namespace at `netns` (e.g.
    /// `/proc/PID/ns/net`): opened on a thread that joined it, so the
    /// agent's own threads stay where they are. A socket stays in the
    /// namespace it was made in.
    pub fn open_in(netns: &Path) -> io::Result<Netlink> {
        let ns = std::fs::File::open(netns)?;
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                Netlink::open()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the netlink thread panicked")))
        })
    }

    fn send(&mut self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(16 + payload.len());
        msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        // SAFETY: a zeroed sockaddr_nl is the kernel's address (pid 0).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: the buffer and the address are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Reads the answers to request `seq` until `done` says they are
    /// complete; each message's (type, payload) is handed to `each`.
    fn receive(
        &mut self,
        seq: u32,
        mut each: impl FnMut(u16, &[u8]) -> io::Result<bool>,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + 16 <= n {
                let len = u32_at(&buf, at) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let got = u32_at(&buf, at + 8);
                if len < 16 || at + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a truncated netlink message",
                    ));
                }
                let payload = &buf[at + 16..at + len];
                at += (len + 3) & !3;
                if got != seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR => {
                        let code = u32_at(payload, 0) as i32;
                        if code < 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok(());
                    }
                    NLMSG_DONE => return Ok(()),
                    _ => {
                        if each(kind, payload)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Sends a request and waits for the kernel's acknowledgement.
    fn request(&mut self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
        let seq = self.send(kind, flags | NLM_F_ACK, payload)?;
        self.receive(seq, |_, _| Ok(false))
    }

    /// Every message a dump request answers with.
    fn dump(&mut self, kind: u16, payload: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.send(kind, NLM_F_DUMP, payload)?;
        let mut all = Vec::new();
        self.receive(seq, |k, p| {
            if k == kind - 2 {
                // RTM_GETX is answered with RTM_NEWX messages.
                all.push(p.to_vec());
            }
            Ok(false)
        })?;
        Ok(all)
    }

    /// The index of the interface called `name`, if there is one.
    pub fn index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut msg = ifinfomsg(0, 0, 0);
        attr(&mut msg, IFLA_IFNAME, &cstr(name));
        let what = || format!("find link {name}");
        let seq = self
            .send(RTM_GETLINK, 0, &msg)
            .map_err(|e| NetlinkError::new(what(), e))?;
        let mut index = None;
        let r = self.receive(seq, |kind, p| {
            if kind == RTM_NEWLINK {
                index = Some(u32_at(p, 4));
                return Ok(true);
            }
            Ok(false)
        });
        match r {
            Ok(()) => Ok(index),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetlinkError::new(what(), e)),
        }
    }

    /// `ip link add NAME type bridge`; an existing link of that name is fine.
    pub fn add_bridge(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut msg = ifinfomsg(0, 0, 0);
        attr(&mut msg, IFLA_IFNAME, &cstr(name));
        nested(&mut msg, IFLA_LINKINFO, |b| {
            attr(b, IFLA_INFO_KIND, &cstr("bridge"))
        });
        match self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &msg) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map_err(|e| NetlinkError::new(format!("add bridge {name}"), e)),
        }
    }

    /// A veth pair: `name` here, and its peer called `peer` in the network
    /// namespace `peer_netns` (an open namespace file) from the start.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: &std::fs::File,
    ) -> Result<(), NetlinkError> {
        let mut msg = ifinfomsg(0, 0, 0);
        attr(&mut msg, IFLA_IFNAME, &cstr(name));
        nested(&mut msg, IFLA_LINKINFO, |b| {
            attr(b, IFLA_INFO_KIND, &cstr("veth"));
            nested(b, IFLA_INFO_DATA, |b| {
                nested(b, VETH_INFO_PEER, |b| {
                    b.extend_from_slice(&ifinfomsg(0, 0, 0));
                    attr(b, IFLA_IFNAME, &cstr(peer));
                    attr(
                        b,
                        IFLA_NET_NS_FD,
                        &(peer_netns.as_raw_fd() as u32).to_ne_bytes(),
                    );
                })
            })
        });
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &msg)
            .map_err(|e| NetlinkError::new(format!("add veth {name} (peer {peer})"), e))
    }

    /// Sets what is given of link `index`: up, its bridge, its alias.
    pub fn set_link(
        &mut self,
        index: u32,
        up: bool,
        master: Option<u32>,
        alias: Option<&str>,
    ) -> Result<(), NetlinkError> {
        let mut msg = ifinfomsg(index, if up { IFF_UP } else { 0 }, IFF_UP);
        if let Some(m) = master {
            attr(&mut msg, IFLA_MASTER, &m.to_ne_bytes());
        }
        if let Some(a) = alias {
            attr(&mut msg, IFLA_IFALIAS, a.as_bytes());
        }
        self.request(RTM_NEWLINK, 0, &msg)
            .map_err(|e| NetlinkError::new(format!("set link {index}"), e))
    }

    /// `ip link del NAME`; a link that is not there is fine.
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut msg = ifinfomsg(0, 0, 0);
        attr(&mut msg, IFLA_IFNAME, &cstr(name));
        match self.request(RTM_DELLINK, 0, &msg) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            r => r.map_err(|e| NetlinkError::new(format!("delete link {name}"), e)),
        }
    }

    /// `ip addr add ADDR/LEN dev INDEX`; the address already there is fine.
    pub fn add_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut msg = ifaddrmsg(prefix_len, index);
        attr(&mut msg, IFA_LOCAL, &addr.octets());
        attr(&mut msg, IFA_ADDRESS, &addr.octets());
        match self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &msg) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map_err(|e| NetlinkError::new(format!("add address {addr}/{prefix_len}"), e)),
        }
    }

    /// `ip route replace DST/LEN via GATEWAY proto PROTOCOL` (a default
    /// route for a /0).
    pub fn replace_route(
        &mut self,
        dst: Ipv4Addr,
        dst_len: u8,
        gateway: Ipv4Addr,
        protocol: u8,
    ) -> Result<(), NetlinkError> {
        let mut msg = rtmsg(dst_len, protocol);
        if dst_len > 0 {
            attr(&mut msg, RTA_DST, &dst.octets());
        }
        attr(&mut msg, RTA_GATEWAY, &gateway.octets());
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &msg)
            .map_err(|e| NetlinkError::new(format!("route {dst}/{dst_len} via {gateway}"), e))
    }

    /// `ip route del DST/LEN [via GATEWAY] proto PROTOCOL`; a route that is
    /// not there is fine.
    pub fn delete_route(
        &mut self,
        dst: Ipv4Addr,
        dst_len: u8,
        gateway: Option<Ipv4Addr>,
        protocol: u8,
    ) -> Result<(), NetlinkError> {
        let mut msg = rtmsg(dst_len, protocol);
        attr(&mut msg, RTA_DST, &dst.octets());
        if let Some(g) = gateway {
            attr(&mut msg, RTA_GATEWAY, &g.octets());
        }
        match self.request(RTM_DELROUTE, 0, &msg) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map_err(|e| NetlinkError::new(format!("delete route {dst}/{dst_len}"), e)),
        }
    }

    /// `ip neigh del ADDR dev INDEX`; an entry that is not there is fine.
    pub fn delete_neighbour(&mut self, index: u32, addr: Ipv4Addr) -> Result<(), NetlinkError> {
        // struct ndmsg: family, pad (3), ifindex (i32), state (u16), flags, type.
        let mut msg = vec![AF_INET, 0, 0, 0];
        msg.extend_from_slice(&(index as i32).to_ne_bytes());
        msg.extend_from_slice(&[0, 0, 0, 0]);
        attr(&mut msg, NDA_DST, &addr.octets());
        match self.request(RTM_DELNEIGH, 0, &msg) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
            r => r.map_err(|e| NetlinkError::new(format!("delete neighbour {addr}"), e)),
        }
    }

    /// Every link: its name, alias and bridge.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        Ok(self.inventory()?.links)
    }

    /// Links, IPv4 addresses and the main table's IPv4 routes, with one
    /// dump of each (addresses and routes name their links from the first).
    pub fn inventory(&mut self) -> Result<Inventory, NetlinkError> {
        let links = self
            .dump(RTM_GETLINK, &ifinfomsg(0, 0, 0))
            .map_err(|e| NetlinkError::new("list links", e))?;
        let names = names(&links);
        let addresses = self
            .dump(RTM_GETADDR, &ifaddrmsg(0, 0))
            .map_err(|e| NetlinkError::new("list addresses", e))?;
        let routes = self
            .dump(RTM_GETROUTE, &rtmsg(0, 0))
            .map_err(|e| NetlinkError::new("list routes", e))?;
        Ok(Inventory {
            links: decode_links(&links),
            addresses: decode_addresses(&addresses, &names),
            routes: decode_routes(&routes, &names),
        })
    }

    /// The main table's IPv4 routes.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        Ok(self.inventory()?.routes)
    }
}

/// What the host's network holds (see [`Netlink::inventory`]).
pub struct Inventory {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
}

/// Interface names by index, from RTM_NEWLINK messages.
fn names(msgs: &[Vec<u8>]) -> std::collections::HashMap<u32, String> {
    msgs.iter()
        .filter_map(|m| {
            let name = attrs(m, 16).into_iter().find(|(k, _)| *k == IFLA_IFNAME)?.1;
            Some((u32_at(m, 4), string(name)))
        })
        .collect()
}

/// Links from RTM_NEWLINK messages (struct ifinfomsg, 16 bytes, then attributes).
fn decode_links(msgs: &[Vec<u8>]) -> Vec<Link> {
    let parsed: Vec<(u32, String, Option<String>, Option<u32>)> = msgs
        .iter()
        .filter_map(|m| {
            let mut name = None;
            let mut alias = None;
            let mut master = None;
            for (k, v) in attrs(m, 16) {
                match k {
                    IFLA_IFNAME => name = Some(string(v)),
                    IFLA_IFALIAS => alias = Some(string(v)).filter(|a| !a.is_empty()),
                    IFLA_MASTER => master = Some(u32_at(v, 0)),
                    _ => {}
                }
            }
            Some((u32_at(m, 4), name?, alias, master))
        })
        .collect();
    parsed
        .iter()
        .map(|(_, name, alias, master)| Link {
            name: name.clone(),
            alias: alias.clone(),
            master: master.and_then(|m| {
                parsed
                    .iter()
                    .find(|(i, ..)| *i == m)
                    .map(|(_, n, ..)| n.clone())
            }),
        })
        .collect()
}

/// IPv4 addresses from RTM_NEWADDR messages (struct ifaddrmsg, 8 bytes).
fn decode_addresses(
    msgs: &[Vec<u8>],
    names: &std::collections::HashMap<u32, String>,
) -> Vec<Address> {
    msgs.iter()
        .filter(|m| m.len() >= 8 && m[0] == AF_INET)
        .filter_map(|m| {
            let a = attrs(m, 8);
            let find = |kind| {
                a.iter()
                    .find(|(k, _)| *k == kind)
                    .and_then(|(_, v)| ipv4(v))
            };
            Some(Address {
                interface: names.get(&u32_at(m, 4))?.clone(),
                ip: find(IFA_LOCAL).or_else(|| find(IFA_ADDRESS))?,
                prefix_len: m[1],
            })
        })
        .collect()
}

/// The main table's IPv4 routes from RTM_NEWROUTE messages (struct rtmsg, 12 bytes).
fn decode_routes(msgs: &[Vec<u8>], names: &std::collections::HashMap<u32, String>) -> Vec<Route> {
    msgs.iter()
        .filter(|m| m.len() >= 12 && m[0] == AF_INET)
        .filter_map(|m| {
            let a = attrs(m, 12);
            let table = a
                .iter()
                .find(|(k, _)| *k == RTA_TABLE)
                .map_or(m[4] as u32, |(_, v)| u32_at(v, 0));
            if table != RT_TABLE_MAIN as u32 {
                return None;
            }
            let dst_len = m[1];
            let dst = a
                .iter()
                .find(|(k, _)| *k == RTA_DST)
                .and_then(|(_, v)| ipv4(v));
            let dst = match (dst, dst_len) {
                (_, 0) => "default".to_string(),
                (Some(d), 32) => d.to_string(),
                (Some(d), l) => format!("{d}/{l}"),
                (None, _) => return None,
            };
            Some(Route {
                dst,
                dev: a
                    .iter()
                    .find(|(k, _)| *k == RTA_OIF)
                    .and_then(|(_, v)| names.get(&u32_at(v, 0)).cloned()),
                gateway: a
                    .iter()
                    .find(|(k, _)| *k == RTA_GATEWAY)
                    .and_then(|(_, v)| ipv4(v))
                    .map(|g| g.to_string()),
                protocol: Some(protocol_name(m[5])),
            })
        })
        .collect()
}

/// A route's protocol as iproute2 names it (`/etc/iproute2/rt_protos`).
pub fn protocol_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        RTPROT_BOOT => "boot".into(),
        4 => "static".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_lengths_cover_their_contents() {
        let mut b = Vec::new();
        nested(&mut b, IFLA_LINKINFO, |b| {
            attr(b, IFLA_INFO_KIND, &cstr("veth"));
        });
        // nlattr(4) + nlattr(4) + "veth\0" (5) padded to 8 = 16.
        assert_eq!(b.len(), 16);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 16);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 9);
        let inner = attrs(&b, 0);
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].0, IFLA_LINKINFO);
        assert_eq!(attrs(inner[0].1, 0), vec![(IFLA_INFO_KIND, &b"veth\0"[..])]);
    }

    /// An RTM_NEWLINK payload as the kernel sends it in a dump.
    fn link(index: u32, name: &str, alias: Option<&str>, master: Option<u32>) -> Vec<u8> {
        let mut m = ifinfomsg(index, 0, 0);
        attr(&mut m, IFLA_IFNAME, &cstr(name));
        if let Some(a) = alias {
            attr(&mut m, IFLA_IFALIAS, &cstr(a));
        }
        if let Some(x) = master {
            attr(&mut m, IFLA_MASTER, &x.to_ne_bytes());
        }
        m
    }

    #[test]
    fn links_carry_their_alias_and_their_bridge_by_name() {
        let links = decode_links(&[
            link(1, "lo", None, None),
            link(7, "drvab12", Some("drover:/var/lib/drover"), None),
            link(9, "dvh0011", Some("drover:/var/lib/drover"), Some(7)),
            link(10, "eth0", Some(""), Some(42)),
        ]);
        assert_eq!(links.len(), 4);
        assert_eq!(links[1].alias.as_deref(), Some("drover:/var/lib/drover"));
        assert_eq!(links[2].master.as_deref(), Some("drvab12"));
        // An empty alias is none; a master that is not in the dump is unknown.
        assert_eq!(links[3].alias, None);
        assert_eq!(links[3].master, None);
    }

    #[test]
    fn addresses_and_routes_are_read_as_iproute2_prints_them() {
        let names = [(7, "drvab12".to_string()), (2, "eth0".to_string())]
            .into_iter()
            .collect();
        let mut a = ifaddrmsg(24, 7);
        attr(&mut a, IFA_LOCAL, &[10, 88, 3, 1]);
        attr(&mut a, IFA_ADDRESS, &[10, 88, 3, 1]);
        assert_eq!(
            decode_addresses(&[a], &names),
            vec![Address {
                interface: "drvab12".into(),
                ip: Ipv4Addr::new(10, 88, 3, 1),
                prefix_len: 24
            }]
        );
        let mut r = rtmsg(24, 215);
        attr(&mut r, RTA_DST, &[10, 88, 4, 0]);
        attr(&mut r, RTA_GATEWAY, &[192, 0, 2, 4]);
        attr(&mut r, RTA_OIF, &2u32.to_ne_bytes());
        let mut d = rtmsg(0, RTPROT_BOOT);
        attr(&mut d, RTA_GATEWAY, &[192, 0, 2, 1]);
        let mut local = rtmsg(24, 2);
        local[4] = 255; // the local table: not a route of the main table
        attr(&mut local, RTA_DST, &[10, 88, 3, 0]);
        let routes = decode_routes(&[r, d, local], &names);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].describe(), "10.88.4.0/24 via 192.0.2.4 dev eth0");
        assert_eq!(routes[0].protocol.as_deref(), Some("215"));
        assert_eq!(routes[1].dst, "default");
        assert_eq!(routes[1].protocol.as_deref(), Some("boot"));
    }

    #[test]
    fn a_truncated_attribute_ends_the_list_instead_of_reading_past_it() {
        let mut b = Vec::new();
        attr(&mut b, IFLA_IFNAME, &cstr("eth0"));
        b.extend_from_slice(&[200, 0, 3, 0, 1, 2]); // claims 200 bytes
        assert_eq!(attrs(&b, 0).len(), 1);
        assert!(attrs(&[1, 0], 0).is_empty());
    }
}
