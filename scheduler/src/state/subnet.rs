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

/// The lowest /24 of `cidr` not in `taken`: one pass over `taken`, so
/// registering the 10,000th node does not compare 10,000 strings for each
/// of 10,000 candidates.
pub fn next_free<'a>(cidr: &str, taken: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let (net, len) = parse_cidr(cidr)?;
    let count = 1u32 << (24 - len);
    let held: std::collections::HashSet<u32> = taken
        .into_iter()
        .filter_map(|s| parse_cidr(s).map(|(n, _)| n))
        .filter(|n| n.wrapping_sub(net) >> 8 < count && n & 0xff == 0)
        .map(|n| (n - net) >> 8)
        .collect();
    (0..count)
        .find(|i| !held.contains(i))
        .map(|i| format!("{}/24", Ipv4Addr::from(net + (i << 8))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_lowest_free_24() {
        assert_eq!(
            next_free("10.88.0.0/16", []).as_deref(),
            Some("10.88.0.0/24")
        );
        assert_eq!(
            next_free("10.88.0.0/16", ["10.88.0.0/24", "10.88.2.0/24"]).as_deref(),
            Some("10.88.1.0/24")
        );
        assert_eq!(next_free("10.88.7.0/24", ["10.88.7.0/24"]), None);
        // Subnets outside the range, or not /24-aligned, hold nothing of it.
        assert_eq!(
            next_free("10.88.0.0/16", ["10.89.0.0/24", "10.87.255.0/24", ""]).as_deref(),
            Some("10.88.0.0/24")
        );
        let many: Vec<String> = (0..5000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        assert_eq!(
            next_free("10.0.0.0/8", many.iter().map(String::as_str)).as_deref(),
            Some("10.19.136.0/24")
        );
        assert_eq!(
            parse_cidr("10.88.1.7/16"),
            Some((u32::from(Ipv4Addr::new(10, 88, 0, 0)), 16))
        );
        assert_eq!(parse_cidr("10.88.0.0/25"), None);
        assert_eq!(parse_cidr("nonsense"), None);
    }
}
