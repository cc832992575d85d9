//! HTTP/1.1 by hand over TLS: a connection that writes exactly the bytes a test chooses, and a
//! reader of heads, sized and chunked bodies shared with the stubs.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use rustls_pki_types::ServerName;

use super::{tls_config, IO_DEADLINE};
use crate::support::Gateway;

/// A blocking TLS connection to the gateway on which a test writes raw bytes and reads raw
/// answers: what reqwest will not send (no `Host`, two `Host`s, lowercase methods, `CONNECT`).
pub struct RawTls {
    wire: Wire<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl RawTls {
    /// HTTP/1.1 (ALPN `http/1.1`), SNI `localhost`, handshake done; panics if it fails.
    pub fn connect(gw: &Gateway) -> RawTls {
        RawTls::open(gw, "localhost", b"http/1.1", None)
            .unwrap_or_else(|e| panic!("TLS connection to {}: {e}", gw.addr()))
    }

    /// A connection with SNI `name`, ALPN `alpn`, from the local address `from` (any loopback
    /// address: `127.0.0.2` is another client IP to the gateway).
    pub fn open(gw: &Gateway, name: &str, alpn: &[u8], from: Option<IpAddr>) -> io::Result<RawTls> {
        let mut raw = RawTls::start(gw, name, alpn, from)?;
        raw.finish_handshake(IO_DEADLINE)?;
        Ok(raw)
    }

    /// Connects over TCP and sends the ClientHello, without waiting for the handshake to end.
    pub fn start(
        gw: &Gateway,
        name: &str,
        alpn: &[u8],
        from: Option<IpAddr>,
    ) -> io::Result<RawTls> {
        let tcp = tcp_from(from, gw.addr())?;
        tcp.set_nodelay(true)?;
        let server = ServerName::try_from(name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(tls_config(gw, &[alpn]), server)
            .map_err(io::Error::other)?;
        let mut raw = RawTls {
            wire: Wire::new(rustls::StreamOwned::new(conn, tcp)),
        };
        let stream = &mut raw.wire.inner;
        stream.conn.write_tls(&mut stream.sock)?;
        Ok(raw)
    }

    /// Drives the handshake to its end within `deadline`; a timeout leaves it resumable.
    pub fn finish_handshake(&mut self, deadline: Duration) -> io::Result<()> {
        let stream = &mut self.wire.inner;
        stream.sock.set_read_timeout(Some(deadline))?;
        stream.sock.set_write_timeout(Some(deadline))?;
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        stream.sock.set_read_timeout(Some(IO_DEADLINE))?;
        stream.sock.set_write_timeout(Some(IO_DEADLINE))?;
        Ok(())
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.wire.inner.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.wire.inner.sock.local_addr().expect("local address")
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.inner.write_all(bytes)?;
        self.wire.inner.flush()
    }

    /// Reads one response (skipping 1xx), its body framed as its head says.
    pub fn response(&mut self) -> io::Result<RawReply> {
        self.response_to("GET")
    }

    /// Like `response`, for a request with `method` (a HEAD's answer has no body).
    pub fn response_to(&mut self, method: &str) -> io::Result<RawReply> {
        loop {
            let head = self
                .wire
                .head()?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed, no answer"))?;
            let (line, headers) = parse_head(&head);
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::other(format!("not a status line: {line:?}")))?;
            if (100..200).contains(&status) {
                continue;
            }
            let mut reply = RawReply {
                status,
                head,
                headers,
                body: Vec::new(),
            };
            let no_body = method == "HEAD" || status == 204 || status == 304;
            if !no_body {
                reply.body = if reply.is_chunked() {
                    self.wire.chunked()?
                } else if let Some(len) = reply.header("content-length") {
                    let len = len
                        .trim()
                        .parse()
                        .map_err(|_| io::Error::other(format!("Content-Length {len:?}")))?;
                    self.wire.exact(len)?
                } else {
                    self.wire.to_end()?
                };
            }
            return Ok(reply);
        }
    }

    /// True when the gateway has closed the connection (EOF or reset) within `within`; false
    /// if the connection is still open and silent. Data is an error: nothing was asked.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let sock = &self.wire.inner.sock;
        let _ = sock.set_read_timeout(Some(within));
        let mut byte = [0u8; 1];
        let closed = match self.wire.inner.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("data arrived on a connection expected to stay silent"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(_) => true,
        };
        let _ = self.wire.inner.sock.set_read_timeout(Some(IO_DEADLINE));
        closed
    }

    /// Exactly `n` bytes of what the server sends (HTTP/2 frames, read by `RawH2`).
    pub fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.wire.exact(n)
    }

    /// The plain socket, to write TLS records by hand or look at it in `/proc/net/tcp`.
    pub fn socket(&self) -> &TcpStream {
        &self.wire.inner.sock
    }
}

/// A TCP connection to `to`, from `from` when given (bound first, port chosen by the kernel).
pub fn tcp_from(from: Option<IpAddr>, to: SocketAddr) -> io::Result<TcpStream> {
    let Some(ip) = from else {
        return TcpStream::connect_timeout(&to, IO_DEADLINE);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.connect_timeout(&to.into(), IO_DEADLINE)?;
    Ok(socket.into())
}

/// A response read off the wire, head kept as sent.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.head, self.text()))
    }
}

/// The first header named `name` (any case).
pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Splits a head into its first line and its header fields, names as sent.
pub fn parse_head(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    (first, headers)
}

/// A byte stream read as HTTP/1.1 framing: heads, sized bodies, chunked bodies.
pub struct Wire<R> {
    pub inner: R,
    buf: Vec<u8>,
}

impl<R: Read> Wire<R> {
    pub fn new(inner: R) -> Wire<R> {
        Wire {
            inner,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.inner.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// A head up to and including its blank line, without the final CRLF CRLF; `None` on a
    /// clean EOF before its first byte.
    pub fn head(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return Ok(Some(head));
            }
            if self.fill()? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "EOF inside a head: {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ))
                };
            }
        }
    }

    pub fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {} of {n} body bytes", self.buf.len()),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a line",
                ));
            }
        }
    }

    /// A chunked body, decoded; trailers read and dropped.
    pub fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::other(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exact(size)?);
            if !self.line()?.is_empty() {
                return Err(io::Error::other("chunk not followed by CRLF"));
            }
        }
    }

    pub fn to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Bytes read but not yet consumed.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
