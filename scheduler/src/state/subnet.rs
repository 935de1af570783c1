//! Node subnets: each node gets a /24 of the cluster's container range for
//! its containers' addresses, the lowest one no other node holds.

use std::net::Ipv4Addr;

/// Parses `a.b.c.d/len` with len ≤ 24 into (network, len).
pub fn parse_cidr(cidr: &str) -> Option<(u32, u8)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 24 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(ip) & mask, len))
}

/// The lowest /24 of `cidr` not in `taken`.
pub fn next_free(cidr: &str, taken: &[&str]) -> Option<String> {
    let (net, len) = parse_cidr(cidr)?;
    let count = 1u32 << (24 - len);
    (0..count)
        .map(|i| format!("{}/24", Ipv4Addr::from(net + (i << 8))))
        .find(|s| !taken.contains(&s.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_lowest_free_24() {
        assert_eq!(
            next_free("10.88.0.0/16", &[]).as_deref(),
            Some("10.88.0.0/24")
        );
        assert_eq!(
            next_free("10.88.0.0/16", &["10.88.0.0/24", "10.88.2.0/24"]).as_deref(),
            Some("10.88.1.0/24")
        );
        assert_eq!(next_free("10.88.7.0/24", &["10.88.7.0/24"]), None);
        assert_eq!(
            parse_cidr("10.88.1.7/16"),
            Some((u32::from(Ipv4Addr::new(10, 88, 0, 0)), 16))
        );
        assert_eq!(parse_cidr("10.88.0.0/25"), None);
        assert_eq!(parse_cidr("nonsense"), None);
    }
}
