//! Fault stubs on loopback, each named for what a real registry would not do: record the bytes
//! a gateway forwards, or answer with conflicting framing.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use super::wire::{header, parse_head, Wire};

/// One request as an upstream stub read it off the wire.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// Header fields with their names exactly as sent.
    pub headers: Vec<(String, String)>,
    /// The body, decoded from the framing the head announced.
    pub body: Vec<u8>,
    /// Why the request is not well framed (RFC 9112 §6), if it is not.
    pub framing_fault: Option<String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// What a stub has seen: requests, and connections that carried something not a request.
#[derive(Default)]
pub struct Seen {
    pub requests: Vec<Recorded>,
    pub garbage: Vec<String>,
}

/// Serves HTTP/1.1 keep-alive connections on `listener`, recording each request and answering
/// each with `answer`'s bytes.
fn serve_recording(listener: TcpListener, seen: Arc<Mutex<Seen>>, answer: &'static [u8]) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().expect("clone a socket");
                let mut wire = Wire::new(conn);
                loop {
                    match read_request(&mut wire) {
                        Ok(Some(recorded)) => {
                            seen.lock().expect("lock").requests.push(recorded);
                            if writer.write_all(answer).is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let left = String::from_utf8_lossy(wire.leftover()).into_owned();
                            seen.lock()
                                .expect("lock")
                                .garbage
                                .push(format!("{e}: {left:?}"));
                            return;
                        }
                    }
                }
            });
        }
    });
}

fn read_request<R: Read>(wire: &mut Wire<R>) -> io::Result<Option<Recorded>> {
    let Some(head) = wire.head()? else {
        return Ok(None);
    };
    let (line, headers) = parse_head(&head);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    let te = header(&headers, "transfer-encoding").map(str::to_ascii_lowercase);
    let mut framing_fault = None;
    if te.is_some() && !lengths.is_empty() {
        framing_fault = Some(format!(
            "Transfer-Encoding {te:?} and Content-Length {lengths:?} together"
        ));
    } else if lengths.len() > 1 {
        framing_fault = Some(format!("Content-Length {lengths:?} repeated"));
    }
    let body = match (&te, lengths.first()) {
        (Some(te), _) if te.trim() == "chunked" => wire.chunked()?,
        (Some(te), _) => {
            framing_fault = Some(format!("Transfer-Encoding {te:?} is not chunked"));
            Vec::new()
        }
        (None, Some(len)) => {
            let len = len
                .trim()
                .parse()
                .map_err(|_| io::Error::other(format!("Content-Length {len:?}")))?;
            wire.exact(len)?
        }
        (None, None) => Vec::new(),
    };
    Ok(Some(Recorded {
        method,
        target,
        headers,
        body,
        framing_fault,
    }))
}

/// Fault stub (and witness): records every request byte for byte and answers each with a
/// plain `200 {}`. A real registry does not show the header names it was sent, nor how a body
/// was framed, which is what these tests need to see.
pub struct RecordingUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl RecordingUpstream {
    pub fn start() -> RecordingUpstream {
        RecordingUpstream::answering(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
    }

    fn answering(answer: &'static [u8]) -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a stub upstream");
        let addr = listener.local_addr().expect("its address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        serve_recording(listener, seen.clone(), answer);
        RecordingUpstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests seen so far whose target starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.seen
            .lock()
            .expect("lock")
            .requests
            .iter()
            .filter(|r| r.target.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Every request target seen so far, for failure messages.
    pub fn targets(&self) -> Vec<String> {
        let seen = self.seen.lock().expect("lock");
        seen.requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }

    /// Connections that carried bytes that were not a well-formed request.
    pub fn garbage(&self) -> Vec<String> {
        self.seen.lock().expect("lock").garbage.clone()
    }
}

/// The body `ConflictingFramingUpstream` means to send: 3,000 bytes, as three chunks.
pub const CONFLICTING_BODY_LEN: usize = 3000;

pub fn conflicting_body() -> Vec<u8> {
    (0..CONFLICTING_BODY_LEN)
        .map(|i| b'a' + (i % 26) as u8)
        .collect()
}

/// Fault stub: answers every request with both `Content-Length: 10` and
/// `Transfer-Encoding: chunked`, the body itself chunked (3,000 bytes). RFC 9112 §6.3 says the
/// chunked framing wins and a proxy must not pass the `Content-Length` on; a real registry never
/// sends both. Records what it is sent, like `RecordingUpstream`.
pub struct ConflictingFramingUpstream(pub RecordingUpstream);

impl ConflictingFramingUpstream {
    pub fn start() -> ConflictingFramingUpstream {
        ConflictingFramingUpstream(RecordingUpstream::answering(conflicting_answer()))
    }

    pub fn url(&self) -> String {
        self.0.url()
    }
}

fn conflicting_answer() -> &'static [u8] {
    static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ANSWER.get_or_init(|| {
        let body = conflicting_body();
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
              Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        for chunk in body.chunks(1000) {
            answer.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
            answer.extend(chunk);
            answer.extend(b"\r\n");
        }
        answer.extend(b"0\r\n\r\n");
        answer
    })
}
