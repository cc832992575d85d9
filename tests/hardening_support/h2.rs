//! HTTP/2 clients: hyper's own (streams under the test's control), and frames by hand (to see a
//! `GOAWAY`, or to stop reading altogether).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rustls_pki_types::ServerName;

use super::{tls_config, RawTls};
use crate::support::Gateway;

/// An HTTP/2 connection through hyper's own client (ALPN `h2`, SNI `localhost`), its connection
/// task spawned on the current runtime; the task's result says how the connection ended. Takes
/// the address and a `tls_config(gw, &[b"h2"])` so it can run on any thread.
pub async fn h2_connect<B>(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connector = tokio_rustls::TlsConnector::from(tls);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("a name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 handshake");
    (send, tokio::spawn(conn))
}

/// One body-less request on a fresh HTTP/2 connection, sent by hyper's client exactly as given
/// (`uri` sets `:authority`; a `host` in `headers` goes as a plain header): the status, or how
/// the request failed.
pub fn h2_request(
    gw: &Gateway,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Result<u16, String> {
    let tls = tls_config(gw, &[b"h2"]);
    let addr = gw.addr();
    let mut req = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("a request");
    crate::support::on_own_runtime(move || async move {
        let (mut send, conn) = h2_connect(addr, tls).await;
        let status = match send.send_request(req).await {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) => Err(format!("{e:?}")),
        };
        drop(send);
        conn.abort();
        status
    })
}

/// What an HTTP/2 connection said, as `RawH2` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H2Event {
    /// A stream ended; `status` from its response head (`None` if no head was decoded).
    Ended { stream: u32, status: Option<u16> },
    /// `GOAWAY` with its last stream id and error code.
    GoAway { last_stream: u32, code: u32 },
    /// `RST_STREAM` with its error code.
    Reset { stream: u32, code: u32 },
    /// The server closed the connection.
    Closed,
}

/// HTTP/2 written and read frame by frame (RFC 9113), for what hyper's client hides: seeing a
/// `GOAWAY` itself, or a client that stops reading altogether. Header blocks are HPACK literals
/// without indexing or Huffman coding; a response's `:status` is decoded only in the indexed
/// forms of the static table (200, 204, 206, 304, 400, 404, 500), which is how hyper sends them.
pub struct RawH2 {
    pub tls: RawTls,
    next_stream: u32,
    status: std::collections::HashMap<u32, u16>,
    /// The server's SETTINGS as received, `(identifier, value)`.
    pub settings: Vec<(u16, u32)>,
}

impl RawH2 {
    /// A connection with SETTINGS sent. `window` is the initial stream window offered, and the
    /// connection window is raised to match: a large one lets the server send without waiting.
    pub fn open(gw: &Gateway, window: u32) -> RawH2 {
        let tls = RawTls::open(gw, "localhost", b"h2", None)
            .unwrap_or_else(|e| panic!("TLS to {}: {e}", gw.addr()));
        assert_eq!(tls.alpn().as_deref(), Some(&b"h2"[..]), "ALPN h2");
        let mut h2 = RawH2 {
            tls,
            next_stream: 1,
            status: Default::default(),
            settings: Vec::new(),
        };
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut settings = vec![0x00, 0x04];
        settings.extend(window.to_be_bytes());
        out.extend(frame(0x4, 0, 0, &settings));
        if window > 65_535 {
            out.extend(frame(0x8, 0, 0, &(window - 65_535).to_be_bytes()));
        }
        h2.tls.send(&out).expect("send the HTTP/2 preface");
        h2
    }

    /// Sends a body-less request (`HEADERS` with END_STREAM); returns its stream id.
    pub fn request(&mut self, method: &str, authority: &str, path: &str) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        let mut block = Vec::new();
        for (name, value) in [
            (":method", method),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
        ] {
            block.push(0x00);
            hpack_string(&mut block, name.as_bytes());
            hpack_string(&mut block, value.as_bytes());
        }
        self.tls
            .send(&frame(0x1, 0x1 | 0x4, id, &block))
            .expect("send HEADERS");
        id
    }

    /// Reads frames until something a test cares about happens, answering SETTINGS and PING
    /// and returning flow-control credit for DATA as a well-behaved client does.
    pub fn next_event(&mut self) -> io::Result<H2Event> {
        loop {
            let head = match self.tls.exact(9) {
                Ok(h) => h,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(H2Event::Closed),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(H2Event::Closed),
                Err(e) => return Err(e),
            };
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let payload = self.tls.exact(len)?;
            let end_stream = flags & 0x1 != 0;
            match kind {
                0x0 => {
                    if len > 0 {
                        let credit = (len as u32).to_be_bytes();
                        let mut out = frame(0x8, 0, 0, &credit);
                        out.extend(frame(0x8, 0, stream, &credit));
                        self.tls.send(&out)?;
                    }
                    if end_stream {
                        let status = self.status.get(&stream).copied();
                        return Ok(H2Event::Ended { stream, status });
                    }
                }
                0x1 => {
                    let block = if flags & 0x8 != 0 {
                        let pad = payload.first().copied().unwrap_or(0) as usize;
                        payload[1..payload.len().saturating_sub(pad)].to_vec()
                    } else {
                        payload.clone()
                    };
                    let block = if flags & 0x20 != 0 {
                        &block[5..]
                    } else {
                        &block[..]
                    };
                    if let Some(status) = block.first().and_then(|b| indexed_status(*b)) {
                        self.status.entry(stream).or_insert(status);
                    }
                    if end_stream {
                        let status = self.status.get(&stream).copied();
                        return Ok(H2Event::Ended { stream, status });
                    }
                }
                0x3 => {
                    let code = u32::from_be_bytes(payload[..4].try_into().unwrap_or([0; 4]));
                    return Ok(H2Event::Reset { stream, code });
                }
                0x4 if flags & 0x1 == 0 => {
                    for pair in payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([pair[0], pair[1]]);
                        let value = u32::from_be_bytes([pair[2], pair[3], pair[4], pair[5]]);
                        self.settings.push((id, value));
                    }
                    self.tls.send(&frame(0x4, 0x1, 0, &[]))?
                }
                0x6 if flags & 0x1 == 0 => self.tls.send(&frame(0x6, 0x1, 0, &payload))?,
                0x7 => {
                    let last_stream =
                        u32::from_be_bytes(payload[..4].try_into().unwrap_or([0; 4])) & 0x7fff_ffff;
                    let code = u32::from_be_bytes(payload[4..8].try_into().unwrap_or([0; 4]));
                    return Ok(H2Event::GoAway { last_stream, code });
                }
                _ => {}
            }
        }
    }
}

/// One HTTP/2 frame: 9-byte head and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK string literal without Huffman coding (RFC 7541 §5.1, §5.2).
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend(s);
}

/// `:status` sent as an indexed field of HPACK's static table (RFC 7541 Appendix A).
fn indexed_status(byte: u8) -> Option<u16> {
    match byte {
        0x88 => Some(200),
        0x89 => Some(204),
        0x8a => Some(206),
        0x8b => Some(304),
        0x8c => Some(400),
        0x8d => Some(404),
        0x8e => Some(500),
        _ => None,
    }
}
