//! What the host's network holds, as plain data: links (with the alias
//! Drover marks its own with and the bridge they hang off), IPv4 addresses
//! and routes, read from iproute2's JSON output (`ip -j`). Conflict checks
//! and reclaiming work on these values, so they are parsed in one place and
//! unit-tested against captured output rather than against the live kernel.

use serde::Deserialize;
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

#[derive(Deserialize)]
struct RawLink {
    ifname: String,
    #[serde(default)]
    ifalias: Option<String>,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    addr_info: Vec<RawAddr>,
}

#[derive(Deserialize)]
struct RawAddr {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: u8,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    protocol: Option<serde_json::Value>,
}

/// Parses `ip -j link show`.
pub fn parse_links(json: &str) -> Result<Vec<Link>, serde_json::Error> {
    let raw: Vec<RawLink> = serde_json::from_str(json)?;
    Ok(raw
        .into_iter()
        .map(|l| Link {
            name: l.ifname,
            alias: l.ifalias.filter(|a| !a.is_empty()),
            master: l.master,
        })
        .collect())
}

/// Parses `ip -j addr show` into its IPv4 addresses.
pub fn parse_addresses(json: &str) -> Result<Vec<Address>, serde_json::Error> {
    let raw: Vec<RawLink> = serde_json::from_str(json)?;
    let mut out = Vec::new();
    for l in raw {
        for a in l.addr_info {
            let ip = a.local.as_deref().and_then(|s| s.parse().ok());
            if let (true, Some(ip)) = (a.family == "inet", ip) {
                out.push(Address {
                    interface: l.ifname.clone(),
                    ip,
                    prefix_len: a.prefixlen,
                });
            }
        }
    }
    Ok(out)
}

/// Parses `ip -j route show`.
pub fn parse_routes(json: &str) -> Result<Vec<Route>, serde_json::Error> {
    let raw: Vec<RawRoute> = serde_json::from_str(json)?;
    Ok(raw
        .into_iter()
        .map(|r| Route {
            dst: r.dst,
            dev: r.dev,
            gateway: r.gateway,
            protocol: r.protocol.map(|p| match p {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_alias_and_master() {
        let json = r#"[{"ifindex":5,"ifname":"drv3d661eba","flags":["UP"],"ifalias":"drover:/var/lib/drover/agent"},
            {"ifindex":6,"ifname":"dvh0011aabb","master":"drv3d661eba","flags":[]},
            {"ifindex":1,"ifname":"lo","flags":[]}]"#;
        let links = parse_links(json).unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(
            links[0].alias.as_deref(),
            Some("drover:/var/lib/drover/agent")
        );
        assert_eq!(links[1].master.as_deref(), Some("drv3d661eba"));
        assert_eq!(links[2].alias, None);
    }

    #[test]
    fn addresses_keep_ipv4_only() {
        let json = r#"[{"ifname":"foo0","addr_info":[
            {"family":"inet","local":"10.88.0.1","prefixlen":24},
            {"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;
        assert_eq!(
            parse_addresses(json).unwrap(),
            vec![Address {
                interface: "foo0".into(),
                ip: Ipv4Addr::new(10, 88, 0, 1),
                prefix_len: 24
            }]
        );
    }

    #[test]
    fn routes_read_numeric_and_named_protocols() {
        let json = r#"[{"dst":"10.88.0.0/24","dev":"drv1","protocol":"kernel","scope":"link","flags":[]},
            {"dst":"10.88.1.0/24","gateway":"192.0.2.7","dev":"eth0","protocol":215,"flags":[]}]"#;
        let r = parse_routes(json).unwrap();
        assert_eq!(r[0].protocol.as_deref(), Some("kernel"));
        assert_eq!(r[1].protocol.as_deref(), Some("215"));
        assert_eq!(r[1].describe(), "10.88.1.0/24 via 192.0.2.7 dev eth0");
    }

    #[test]
    fn bad_output_is_an_error_not_a_panic() {
        assert!(parse_links("not json").is_err());
        assert!(parse_routes("[{}]").is_err());
    }
}
