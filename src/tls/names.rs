//! What a certificate vouches for: subject alternative names and how one covers another, the
//! facts `serve` reads from a leaf, and a CA's name constraints (`--permit`) and what they allow.

use std::net::IpAddr;

use rcgen::{CidrSubnet, GeneralSubtree};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// What `serve` needs to know about a leaf certificate.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Colon-separated hex, as `openssl x509 -serial` prints it (modulo colons).
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub names: Vec<SanName>,
}

impl Leaf {
    pub fn parse(der: &CertificateDer<'_>) -> Result<Leaf, String> {
        let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let sans = x509.subject_alternative_name().map_err(|e| e.to_string())?;
        let names = sans
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(SanName::from_general)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Leaf {
            serial: x509.raw_serial_as_string(),
            not_before: x509.validity().not_before.to_datetime(),
            not_after: x509.validity().not_after.to_datetime(),
            names,
        })
    }

    /// The start of the last third of the validity period.
    pub fn renew_at(&self) -> OffsetDateTime {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }

    /// Those of `wanted` that no SAN of this certificate covers.
    pub fn missing(&self, wanted: &[String]) -> Vec<String> {
        wanted
            .iter()
            .filter(|w| match SanName::parse(w) {
                Ok(w) => !self.names.iter().any(|n| n.covers(&w)),
                Err(_) => true,
            })
            .cloned()
            .collect()
    }
}

/// A subject alternative name: DNS names are lowercase without trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanName {
    Dns(String),
    Ip(IpAddr),
}

impl SanName {
    /// A DNS name or an IP literal (IPv6 with or without brackets); never a port.
    pub fn parse(name: &str) -> Result<SanName, String> {
        let trimmed = name.trim();
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(SanName::Ip(ip));
        }
        let dns = trimmed.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |(i, l): (usize, &str)| {
            (i == 0 && l == "*")
                || (!l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        };
        if dns.is_empty() || dns.len() > 253 || !dns.split('.').enumerate().all(label_ok) {
            return Err(format!(
                "{name:?} is not a DNS name or IP address (no port or scheme here)"
            ));
        }
        Ok(SanName::Dns(dns))
    }

    fn from_general(name: &GeneralName<'_>) -> Option<SanName> {
        match name {
            GeneralName::DNSName(dns) => {
                Some(SanName::Dns(dns.trim_end_matches('.').to_ascii_lowercase()))
            }
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(SanName::Ip),
            _ => None,
        }
    }

    /// Whether this SAN matches `wanted`: IPs by value, DNS case-insensitively, `*.` standing
    /// for exactly one leftmost label (RFC 6125 section 6.4.3).
    pub fn covers(&self, wanted: &SanName) -> bool {
        match (self, wanted) {
            (SanName::Ip(a), SanName::Ip(b)) => a == b,
            (SanName::Dns(pattern), SanName::Dns(name)) => match pattern.strip_prefix("*.") {
                Some(parent) => name
                    .split_once('.')
                    .is_some_and(|(label, rest)| label != "*" && rest == parent),
                None => pattern == name,
            },
            _ => false,
        }
    }
}

/// The DNS and IP subtrees of a CA's name constraints (RFC 5280 section 4.2.1.10). A name
/// type with no permitted subtree is unconstrained.
#[derive(Debug, Default)]
pub(crate) struct Constraints {
    permitted_dns: Vec<String>,
    permitted_ip: Vec<(Vec<u8>, Vec<u8>)>,
    excluded_dns: Vec<String>,
    excluded_ip: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Constraints {
    pub(crate) fn of(x509: &X509Certificate<'_>) -> Result<Constraints, String> {
        let mut c = Constraints::default();
        let Some(ext) = x509.name_constraints().map_err(|e| e.to_string())? else {
            return Ok(c);
        };
        let sort = |subtrees: &Option<Vec<x509_parser::extensions::GeneralSubtree<'_>>>,
                    dns: &mut Vec<String>,
                    ip: &mut Vec<(Vec<u8>, Vec<u8>)>| {
            for subtree in subtrees.iter().flatten() {
                match &subtree.base {
                    GeneralName::DNSName(d) => {
                        dns.push(d.trim_start_matches('.').to_ascii_lowercase())
                    }
                    GeneralName::IPAddress(b) if b.len() == 8 || b.len() == 32 => {
                        let (addr, mask) = b.split_at(b.len() / 2);
                        ip.push((addr.to_vec(), mask.to_vec()));
                    }
                    _ => {}
                }
            }
        };
        sort(
            &ext.value.permitted_subtrees,
            &mut c.permitted_dns,
            &mut c.permitted_ip,
        );
        sort(
            &ext.value.excluded_subtrees,
            &mut c.excluded_dns,
            &mut c.excluded_ip,
        );
        Ok(c)
    }

    pub(crate) fn permits(&self, name: &SanName) -> bool {
        let dns_in = |base: &String, d: &str| {
            base.is_empty() || d == base || d.ends_with(&format!(".{base}"))
        };
        let ip_in = |(addr, mask): &(Vec<u8>, Vec<u8>), ip: &[u8]| {
            ip.len() == addr.len()
                && ip
                    .iter()
                    .zip(addr)
                    .zip(mask)
                    .all(|((i, a), m)| i & m == a & m)
        };
        match name {
            SanName::Dns(d) => {
                (self.permitted_dns.is_empty() || self.permitted_dns.iter().any(|b| dns_in(b, d)))
                    && !self.excluded_dns.iter().any(|b| dns_in(b, d))
            }
            SanName::Ip(ip) => {
                let octets = ip_octets(ip);
                (self.permitted_ip.is_empty()
                    || self.permitted_ip.iter().any(|s| ip_in(s, &octets)))
                    && !self.excluded_ip.iter().any(|s| ip_in(s, &octets))
            }
        }
    }
}

/// `registry.example.com`, `10.0.0.0/8`, `::1/128` or a bare IP (a single address).
pub(crate) fn parse_permit(entry: &str) -> Result<GeneralSubtree, String> {
    let entry = entry.trim();
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("{entry:?}: the prefix length must be a number from 0 to {max}")
            })?,
        };
        // Host bits are cleared so that `10.1.2.3/8` means the network `10.0.0.0/8`.
        return Ok(GeneralSubtree::IpAddress(
            match CidrSubnet::from_addr_prefix(ip, prefix) {
                CidrSubnet::V4(a, m) => CidrSubnet::V4(std::array::from_fn(|i| a[i] & m[i]), m),
                CidrSubnet::V6(a, m) => CidrSubnet::V6(std::array::from_fn(|i| a[i] & m[i]), m),
            },
        ));
    }
    match (prefix, SanName::parse(entry)) {
        (None, Ok(SanName::Dns(dns))) if !dns.contains('*') => Ok(GeneralSubtree::DnsName(dns)),
        _ => Err(format!(
            "{entry:?} is neither a DNS name (registry.example.com) nor an IP or CIDR (10.0.0.0/8)"
        )),
    }
}

pub(crate) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn ip_octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// A time as logs and error messages show it: `2025-01-31 12:00:00 UTC`.
pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn san_coverage() {
        let leaf = Leaf {
            serial: String::new(),
            not_before: OffsetDateTime::UNIX_EPOCH,
            not_after: OffsetDateTime::UNIX_EPOCH + time::Duration::days(3),
            names: [
                "Registry.example.com",
                "*.apps.example.com",
                "::1",
                "10.0.0.1",
            ]
            .iter()
            .map(|n| SanName::parse(n).unwrap())
            .collect(),
        };
        let wanted = names(&[
            "REGISTRY.example.com.",
            "x.apps.example.com",
            "0:0:0:0:0:0:0:1",
            "[::1]",
            "10.0.0.1",
            "apps.example.com",
            "a.b.apps.example.com",
            "10.0.0.2",
            "::ffff:10.0.0.1",
            "registry",
        ]);
        assert_eq!(
            leaf.missing(&wanted),
            names(&[
                "apps.example.com",
                "a.b.apps.example.com",
                "10.0.0.2",
                "::ffff:10.0.0.1",
                "registry"
            ])
        );
        assert_eq!(
            leaf.renew_at(),
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(2)
        );
    }
}
