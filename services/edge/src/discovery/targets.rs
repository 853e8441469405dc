//! Discovery targets: an IPv4 address, an inclusive range `a-b`, or a CIDR block.

use std::net::Ipv4Addr;

/// Largest number of addresses one target may cover (a /16).
pub const MAX_TARGET_ADDRESSES: u64 = 65_536;

/// An inclusive IPv4 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetRange {
    /// First address.
    pub first: Ipv4Addr,
    /// Last address (inclusive).
    pub last: Ipv4Addr,
}

impl TargetRange {
    /// Parse `10.0.0.5`, `10.0.0.10-10.0.0.40` or `192.168.1.0/24`.
    ///
    /// CIDR blocks of /30 and wider leave out their network and broadcast
    /// addresses. Ranges larger than [`MAX_TARGET_ADDRESSES`] are refused.
    pub fn parse(s: &str) -> Result<TargetRange, String> {
        let s = s.trim();
        let ip = |p: &str| {
            p.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("{p:?} is not an IPv4 address"))
        };
        let range = if let Some((a, b)) = s.split_once('-') {
            let (first, last) = (ip(a)?, ip(b)?);
            if first > last {
                return Err(format!("range {s:?} ends before it starts"));
            }
            TargetRange { first, last }
        } else if let Some((a, len)) = s.split_once('/') {
            let base = u32::from(ip(a)?);
            let len: u32 = len
                .parse()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| format!("bad prefix length in {s:?}"))?;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let (mut first, mut last) = (base & mask, (base & mask) | !mask);
            if len <= 30 {
                first += 1;
                last -= 1;
            }
            TargetRange {
                first: Ipv4Addr::from(first),
                last: Ipv4Addr::from(last),
            }
        } else {
            let a = ip(s)?;
            TargetRange { first: a, last: a }
        };
        if range.len() > MAX_TARGET_ADDRESSES {
            return Err(format!(
                "{s:?} covers {} addresses; at most {MAX_TARGET_ADDRESSES} (a /16) per target",
                range.len()
            ));
        }
        Ok(range)
    }

    /// Number of addresses.
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    /// Always false (a range holds at least one address).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }

    /// Every address, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_ranges_and_cidr() {
        let one = TargetRange::parse("10.0.0.5").unwrap();
        assert_eq!(one.len(), 1);
        let r = TargetRange::parse("10.0.0.10-10.0.0.40").unwrap();
        assert_eq!(r.len(), 31);
        assert!(r.contains("10.0.0.40".parse().unwrap()));
        assert!(!r.contains("10.0.0.41".parse().unwrap()));
        let c = TargetRange::parse("192.168.1.0/24").unwrap();
        assert_eq!(c.len(), 254, "network and broadcast addresses left out");
        assert_eq!(c.addresses().next(), Some("192.168.1.1".parse().unwrap()));
        assert_eq!(TargetRange::parse("10.1.2.3/32").unwrap().len(), 1);
        assert_eq!(TargetRange::parse("10.0.0.0/16").unwrap().len(), 65_534);
        assert!(TargetRange::parse("10.0.0.0/15")
            .unwrap_err()
            .contains("at most"));
        assert!(TargetRange::parse("10.0.0.9-10.0.0.1").is_err());
        assert!(TargetRange::parse("printer.local").is_err());
        assert!(TargetRange::parse("10.0.0.0/33").is_err());
    }
}
