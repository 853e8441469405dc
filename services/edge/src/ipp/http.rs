//! Just enough HTTP/1.1 to POST one `application/ipp` request and read the
//! answer: status line, headers, then a `Content-Length`, chunked, or
//! read-to-close body.
//!
//! No HTTP library is in the dependency tree, and IPP needs one request per
//! poll, so a small client over a tokio `TcpStream` keeps the build lean.
//! Every read is capped (headers at [`MAX_HEADER_BYTES`], the body at the
//! caller's limit, chunk-size lines at 1 KiB); the caller bounds the time.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest status line plus headers accepted.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Interim (1xx) responses skipped before giving up.
const MAX_INTERIM: usize = 4;
/// Longest chunk-size line (with extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// How an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP response: {0}")]
    Protocol(String),
    #[error("HTTP status {status} {reason}")]
    Status { status: u16, reason: String },
    #[error("response larger than {limit} bytes")]
    TooLarge { limit: usize },
}

fn protocol(reason: impl Into<String>) -> HttpError {
    HttpError::Protocol(reason.into())
}

/// Longest excerpt of device text quoted in an error.
const EXCERPT_CHARS: usize = 32;

/// Device text fit for an error message (errors are logged): at most
/// [`EXCERPT_CHARS`] characters, anything but printable ASCII shown as `?`,
/// and the original size when cut. Device strings may be attacker-controlled
/// and as large as the header limit; a log line must not carry them whole.
fn excerpt(text: &str) -> String {
    let (shown, cut) = clip(text);
    match cut {
        Some(len) => format!("\"{shown}...\" ({len} bytes)"),
        None => format!("\"{shown}\""),
    }
}

/// [`excerpt`] without quotes (for the reason phrase).
fn sanitise(text: &str) -> String {
    let (shown, cut) = clip(text);
    match cut {
        Some(len) => format!("{shown}... ({len} bytes)"),
        None => shown,
    }
}

/// The printable prefix of `text`, and its length in bytes when cut.
fn clip(text: &str) -> (String, Option<usize>) {
    let shown = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    let cut = text
        .chars()
        .nth(EXCERPT_CHARS)
        .is_some()
        .then_some(text.len());
    (shown, cut)
}

/// A buffered reader that never holds more than it is allowed to.
struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// Read more bytes; `false` at end of stream.
    async fn fill(&mut self) -> Result<bool, HttpError> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Bytes up to and including the first `\r\n\r\n`, at most `max`.
    async fn head(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                if i + 4 > max {
                    break;
                }
                return Ok(self.buf.drain(..i + 4).collect());
            }
            if self.buf.len() > max {
                break;
            }
            if !self.fill().await? {
                return Err(protocol("connection closed inside the response headers"));
            }
        }
        Err(protocol(format!("response headers exceed {max} bytes")))
    }

    /// One CRLF-terminated line of at most `max` bytes, without the CRLF.
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                if i > max {
                    break;
                }
                let mut l: Vec<u8> = self.buf.drain(..i + 2).collect();
                l.truncate(i);
                return Ok(l);
            }
            if self.buf.len() > max + 1 {
                break;
            }
            if !self.fill().await? {
                return Err(protocol("connection closed inside a chunked body"));
            }
        }
        Err(protocol("chunk-size line too long"))
    }

    /// Exactly `n` bytes.
    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, HttpError> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(protocol(format!(
                    "connection closed after {} of {n} body bytes",
                    self.buf.len()
                )));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Everything until the peer closes, at most `limit` bytes.
    async fn read_to_close(&mut self, limit: usize) -> Result<Vec<u8>, HttpError> {
        loop {
            if self.buf.len() > limit {
                return Err(HttpError::TooLarge { limit });
            }
            if !self.fill().await? {
                return Ok(std::mem::take(&mut self.buf));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A parsed status line and the headers that matter here.
#[derive(Debug)]
struct Head {
    status: u16,
    reason: String,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(raw: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(raw).map_err(|_| protocol("headers are not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(protocol(format!(
            "not an HTTP/1.x status line: {}",
            excerpt(status_line)
        )));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| protocol(format!("bad status code in {}", excerpt(status_line))))?;
    // The reason phrase ends up in HttpError::Status, i.e. in logs.
    let reason = sanitise(parts.next().unwrap_or_default().trim());
    let mut head = Head {
        status,
        reason,
        content_length: None,
        chunked: false,
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(protocol(format!(
                "header line without a colon: {}",
                excerpt(line)
            )));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| protocol(format!("bad Content-Length {}", excerpt(value))))?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(protocol("conflicting Content-Length headers"));
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if last.eq_ignore_ascii_case("chunked") {
                head.chunked = true;
            } else if !last.eq_ignore_ascii_case("identity") {
                return Err(protocol(format!(
                    "unsupported Transfer-Encoding {}",
                    excerpt(value)
                )));
            }
        }
    }
    Ok(head)
}

/// Decode a chunked body of at most `limit` bytes (trailers are skipped).
async fn chunked<S: AsyncRead + Unpin>(
    conn: &mut Conn<S>,
    limit: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = conn.line(MAX_CHUNK_LINE).await?;
        let line = std::str::from_utf8(&line).map_err(|_| protocol("chunk size not ASCII"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| protocol(format!("bad chunk size {}", excerpt(size_text))))?;
        if size == 0 {
            // Trailer section: header lines until an empty one.
            for _ in 0..64 {
                if conn.line(MAX_CHUNK_LINE).await?.is_empty() {
                    return Ok(body);
                }
            }
            return Err(protocol("too many trailer lines"));
        }
        if body.len().saturating_add(size) > limit {
            return Err(HttpError::TooLarge { limit });
        }
        body.extend_from_slice(&conn.exact(size).await?);
        if !conn.exact(2).await?.eq(b"\r\n") {
            return Err(protocol("chunk not followed by CRLF"));
        }
    }
}

/// The request bytes: `POST path` with `Host`, `Content-Type: application/ipp`.
pub(crate) fn request(host: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/ipp\r\n\
         Content-Length: {}\r\nAccept: application/ipp\r\nConnection: close\r\n\
         User-Agent: fleetpulse-edge/{}\r\n\r\n",
        body.len(),
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A `GET path` request with `Host` and `Accept` (used by the 3D printer
/// driver, which shares this client).
pub(crate) fn get_request(host: &str, path: &str, accept: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\nConnection: close\r\n\
         User-Agent: fleetpulse-edge/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// Send `request` and return the body of a `200` answer (at most `limit` bytes).
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    request: &[u8],
    limit: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    conn.stream.write_all(request).await?;
    conn.stream.flush().await?;
    let mut interim = 0;
    let head = loop {
        let raw = conn.head(MAX_HEADER_BYTES).await?;
        let head = parse_head(&raw)?;
        if (100..200).contains(&head.status) {
            interim += 1;
            if interim > MAX_INTERIM {
                return Err(protocol("too many interim (1xx) responses"));
            }
            continue;
        }
        break head;
    };
    if head.status != 200 {
        return Err(HttpError::Status {
            status: head.status,
            reason: head.reason.chars().take(128).collect(),
        });
    }
    if head.chunked {
        chunked(&mut conn, limit).await
    } else if let Some(n) = head.content_length {
        if n > limit {
            return Err(HttpError::TooLarge { limit });
        }
        conn.exact(n).await
    } else {
        conn.read_to_close(limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(response: &[u8], limit: usize) -> Result<Vec<u8>, HttpError> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let response = response.to_vec();
        let srv = tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            let _ = server.read(&mut sink).await;
            let _ = server.write_all(&response).await;
            let _ = server.shutdown().await;
        });
        let r = exchange(client, &request("h", "/p", b"x"), limit).await;
        let _ = srv.await;
        r
    }

    #[tokio::test]
    async fn bodies() {
        let ok = run(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", 100).await;
        assert_eq!(ok.unwrap(), b"abc");
        let ch = run(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
            100,
        )
        .await;
        assert_eq!(ch.unwrap(), b"abcde");
        let close = run(b"HTTP/1.0 200 OK\r\n\r\nhello", 100).await;
        assert_eq!(close.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn failures_are_typed() {
        let r = run(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 100).await;
        assert!(
            matches!(r, Err(HttpError::Status { status: 404, .. })),
            "{r:?}"
        );
        let r = run(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 100).await;
        assert!(
            matches!(r, Err(HttpError::TooLarge { limit: 100 })),
            "{r:?}"
        );
        let r = run(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            100,
        )
        .await;
        assert!(matches!(r, Err(HttpError::Protocol(_))), "{r:?}");
        let r = run(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n80\r\n",
            100,
        )
        .await;
        assert!(matches!(r, Err(HttpError::TooLarge { .. })), "{r:?}");
        let r = run(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100).await;
        assert!(matches!(r, Err(HttpError::Protocol(_))), "{r:?}");
        let r = run(b"SSH-2.0-OpenSSH\r\n\r\n", 100).await;
        assert!(matches!(r, Err(HttpError::Protocol(_))), "{r:?}");
        let r = run(b"HTTP/1.1 200 OK\r\n\r\n", 3).await;
        assert!(r.is_ok());
        let big = [b"HTTP/1.1 200 OK\r\n".as_slice(), &[b'a'; 20_000]].concat();
        let r = run(&big, 100).await;
        assert!(matches!(r, Err(HttpError::Protocol(_))), "{r:?}");
        let r = run(b"HTTP/1.1 200 OK\r\n\r\n0123456789", 5).await;
        assert!(matches!(r, Err(HttpError::TooLarge { limit: 5 })), "{r:?}");
    }

    /// Device text in errors is bounded and printable: a hostile printer
    /// cannot put 10 KB or terminal escapes into our log lines.
    #[tokio::test]
    async fn device_text_in_errors_is_bounded_and_sanitised() {
        let hostile = format!("\x1b[31m{}", "9".repeat(10_000));
        let cases = [
            format!("HTTP/1.1 200 OK\r\nContent-Length: {hostile}\r\n\r\n"),
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {hostile}\r\n\r\n"),
            format!("HTTP/1.1 200 OK\r\nX-{hostile}\r\n\r\n"),
            format!("HTTP/1.1 2{hostile} OK\r\n\r\n"),
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\x1b[31m{}\r\n",
                "z".repeat(900)
            ),
            format!("HTTP/1.1 503 {hostile}\r\nContent-Length: 0\r\n\r\n"),
        ];
        for case in cases {
            let e = run(case.as_bytes(), 100_000).await.expect_err("rejected");
            let text = e.to_string();
            assert!(text.len() < 160, "{} bytes: {text}", text.len());
            assert!(!text.contains('\x1b'), "{text:?}");
            assert!(!text.contains(&"9".repeat(40)), "{text}");
            assert!(
                text.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
                "{text:?}"
            );
        }
        assert_eq!(
            excerpt(&"a".repeat(40)),
            format!("\"{}...\" (40 bytes)", "a".repeat(32))
        );
        assert_eq!(excerpt("12\tx"), "\"12?x\"");
    }
}
