//! The names and addresses this machine is reached by, for a first start that listens on a
//! wildcard address with no `hostnames`: a certificate for `localhost` alone would fail every
//! docker host that connects by the server's name or address. Linux's /proc is read; nothing
//! is resolved over the network.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host name and every non-loopback, non-link-local interface address.
pub fn names() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_ascii_lowercase();
        if !h.is_empty() && h != "localhost" {
            out.push(h);
        }
    }
    let mut addrs: BTreeSet<IpAddr> = BTreeSet::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        addrs.extend(local_v4(&trie).into_iter().map(IpAddr::V4));
    }
    if let Ok(table) = std::fs::read_to_string("/proc/net/if_inet6") {
        addrs.extend(v6(&table).into_iter().map(IpAddr::V6));
    }
    out.extend(addrs.iter().map(|a| a.to_string()));
    out
}

/// `/proc/net/fib_trie` lists each local address as a leaf followed by `/32 host LOCAL`.
fn local_v4(trie: &str) -> Vec<Ipv4Addr> {
    let lines: Vec<&str> = trie.lines().collect();
    let mut out = Vec::new();
    for pair in lines.windows(2) {
        if !pair[1].contains("/32 host LOCAL") {
            continue;
        }
        let Some(addr) = pair[0].trim().strip_prefix("|-- ") else {
            continue;
        };
        if let Ok(ip) = addr.trim().parse::<Ipv4Addr>() {
            if !ip.is_loopback() && !ip.is_link_local() && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// `/proc/net/if_inet6`: 32 hex digits, index, prefix length, scope, flags, device.
fn v6(table: &str) -> Vec<Ipv6Addr> {
    table
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(Ipv6Addr::from)
        // Loopback is covered already; link-local (fe80::/10) needs a zone no URL carries.
        .filter(|ip| !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_tables_give_the_machine_addresses() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.0.2.15\n        /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 10.0.2.255\n        /32 link BROADCAST\n";
        assert_eq!(local_v4(trie), vec![Ipv4Addr::new(10, 0, 2, 15)]);
        let table = "fd000000000000000000000000000002 04 40 00 82     eth0\n\
                     fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
                     00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(v6(table), vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]);
    }
}
