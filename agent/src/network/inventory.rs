//! What the host's network holds, as plain data: links (with the alias
//! Drover marks its own with and the bridge they hang off), IPv4 addresses
//! and routes, read from the kernel's rtnetlink dumps (see
//! [`super::netlink`]). Conflict checks and reclaiming work on these values,
//! so they are unit-tested on data rather than against the live kernel.

use std::net::Ipv4Addr;

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    /// `ip link set dev X alias …`; Drover writes its marker here.
    pub alias: Option<String>,
    /// The bridge this link is a port of.
    pub master: Option<String>,
}

/// An IPv4 address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub interface: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// A route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `default` or a prefix (`10.88.0.0/24`; a host route has no `/len`).
    pub dst: String,
    pub dev: Option<String>,
    pub gateway: Option<String>,
    /// `kernel`, `boot`, … or a number for protocols iproute2 has no name for.
    pub protocol: Option<String>,
}

impl Route {
    /// `10.88.0.0/24 via 192.0.2.1 dev eth0`, as `ip route` prints it.
    pub fn describe(&self) -> String {
        let mut s = self.dst.clone();
        if let Some(g) = &self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        if let Some(d) = &self.dev {
            s.push_str(&format!(" dev {d}"));
        }
        s
    }
}

/// `10.88.1.0/24` (or a host address, a /32) as address and length.
pub fn parse_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    match s.split_once('/') {
        Some((a, l)) => Some((a.parse().ok()?, l.parse().ok().filter(|l| *l <= 32)?)),
        None => Some((s.parse().ok()?, 32)),
    }
}

/// Whether prefix `inner` lies inside `outer` (or is it).
pub fn within(inner: (Ipv4Addr, u8), outer: (Ipv4Addr, u8)) -> bool {
    let mask = |len: u8| if len == 0 { 0 } else { u32::MAX << (32 - len) };
    inner.1 >= outer.1 && u32::from(inner.0) & mask(outer.1) == u32::from(outer.0) & mask(outer.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_nest() {
        let net = parse_prefix("10.88.1.0/24").unwrap();
        assert_eq!(net, (Ipv4Addr::new(10, 88, 1, 0), 24));
        assert_eq!(
            parse_prefix("10.88.1.7"),
            Some((Ipv4Addr::new(10, 88, 1, 7), 32))
        );
        assert_eq!(parse_prefix("10.88.1.0/33"), None);
        assert_eq!(parse_prefix("default"), None);
        assert!(within(parse_prefix("10.88.1.128/25").unwrap(), net));
        assert!(within(parse_prefix("10.88.1.7").unwrap(), net));
        assert!(within(net, net));
        assert!(!within(parse_prefix("10.88.0.0/16").unwrap(), net));
        assert!(!within(parse_prefix("10.88.2.0/24").unwrap(), net));
    }
}
