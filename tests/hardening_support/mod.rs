//! What the hardening tests (and `protocols.rs`'s raw keep-alive tests) need beyond
//! `tests/support`: TLS connections that write exactly the
//! bytes a test chooses (HTTP/1.1 by hand, HTTP/2 through hyper's own client or frames by hand),
//! what the kernel says about the gateway's sockets and files, and fault stubs that record, byte
//! for byte, what a gateway forwards, or answer what a real registry never would. Each stub is
//! named for the fault it injects.
// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

mod h2;
mod stubs;
mod wire;

pub use h2::{h2_connect, h2_request, H2Event, RawH2};
pub use stubs::{conflicting_body, ConflictingFramingUpstream, Recorded, RecordingUpstream};
pub use wire::{header, parse_head, tcp_from, RawReply, RawTls, Wire};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{Gateway, Registry};

/// How long a raw connection waits for the gateway before the test gives up.
pub const IO_DEADLINE: Duration = Duration::from_secs(10);

/// A rustls client config trusting only the gateway's CA and offering `alpn`.
pub fn tls_config(gw: &Gateway, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            dockgate::tls::Ca::load(&gw.certs_dir())
                .expect("the gateway's CA")
                .cert_der()
                .clone(),
        )
        .expect("add the CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
}

/// Polls `ready` every 50 ms until it holds, panicking with `what()` at `deadline`.
pub fn wait_for(deadline: Duration, mut ready: impl FnMut() -> bool, what: impl Fn() -> String) {
    let end = Instant::now() + deadline;
    while !ready() {
        assert!(Instant::now() < end, "not within {deadline:?}: {}", what());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Access-log lines of a Distribution registry (`"METHOD /path HTTP/1.1" status`) that
/// contain `needle`.
pub fn access_lines(registry_log: &str, needle: &str) -> Vec<String> {
    registry_log
        .lines()
        .filter(|l| l.contains(" HTTP/1.1\" ") && l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// The bytes waiting unread in the receive queue of the local TCP socket `local` (from
/// `/proc/net/tcp`), to see that a server is sending to a client that does not read.
pub fn unread_bytes(local: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = local else {
        panic!("IPv4 only: {local}")
    };
    let ip = u32::from_le_bytes(v4.ip().octets());
    let key = format!("{ip:08X}:{:04X}", v4.port());
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(1) == Some(&key.as_str())).then(|| {
                let queues = cols.get(4).copied().unwrap_or("0:0");
                let rx = queues.split(':').nth(1).unwrap_or("0");
                usize::from_str_radix(rx, 16).unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// Connections the server listening on `server` has accepted (a socket in the accept queue has
/// no inode yet), from `/proc/net/tcp`; with `client`, only that client's.
pub fn accepted(server: SocketAddr, client: Option<SocketAddr>) -> usize {
    let hex = |addr: SocketAddr| -> String {
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4 only: {addr}")
        };
        let ip = u32::from_le_bytes(v4.ip().octets());
        format!("{ip:08X}:{:04X}", v4.port())
    };
    let local = hex(server);
    let remote = client.map(hex);
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.get(1) == Some(&local.as_str())
                && cols.get(3) == Some(&"01")
                && remote.as_deref().is_none_or(|r| cols.get(2) == Some(&r))
                && cols.get(9).is_some_and(|inode| *inode != "0")
        })
        .count()
}

/// A gateway with `registry` as both put and get, `toml` added to its config.
pub fn gateway_in_front_of(registry: &Registry, toml: &str) -> Gateway {
    Gateway::builder()
        .toml(toml)
        .put(&registry.url())
        .get(&registry.url())
        .start()
}

/// `GET path` on an open HTTP/1.1 connection; its status.
pub fn get_on(conn: &mut RawTls, gw: &Gateway, path: &str) -> std::io::Result<u16> {
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", gw.host_port()).as_bytes())?;
    Ok(conn.response()?.status)
}
