//! Just enough HTTP/1.1 for a demo workload and its health checks.
//!
//! A connection is a byte stream that may carry several requests (keep-alive).
//! [`parse_request`] looks at the bytes buffered so far and either finds one
//! complete request head (plus any `Content-Length` body, which is skipped),
//! reports that more bytes are needed, or rejects the input. It is a pure
//! function over a byte slice so that the tricky part, framing, is unit-tested
//! without sockets. Chunked request bodies are not supported: nothing in the
//! demos sends them.

use std::fmt;
use std::io::{self, Write};

/// Largest request head (request line plus headers) we accept.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body we are willing to read and discard.
pub const MAX_BODY: usize = 64 * 1024;

/// One parsed request; the body is dropped, the demo never needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Request target without the query string.
    pub path: String,
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    pub http11: bool,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// First header with this name (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after the response:
    /// HTTP/1.1 defaults to yes, HTTP/1.0 to no, `Connection` overrides.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").unwrap_or("");
        let has = |token: &str| {
            conn.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.http11 {
            !has("close")
        } else {
            has("keep-alive")
        }
    }
}

/// Outcome of looking at the buffered bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A full request; `consumed` bytes (head and body) belong to it.
    Complete { request: Request, consumed: usize },
    /// The head or body is not fully buffered yet.
    Partial,
}

/// Why a request could not be parsed; each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed request line or header.
    BadRequest(&'static str),
    /// Request head larger than [`MAX_HEAD`].
    HeadTooLarge,
    /// Body larger than [`MAX_BODY`].
    BodyTooLarge(usize),
    /// A version other than HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion(String),
    /// `Transfer-Encoding` on a request (chunked bodies are not supported).
    UnsupportedTransferEncoding,
}

impl ParseError {
    pub fn status(&self) -> u16 {
        match self {
            ParseError::BadRequest(_) => 400,
            ParseError::HeadTooLarge => 431,
            ParseError::BodyTooLarge(_) => 413,
            ParseError::UnsupportedVersion(_) => 505,
            ParseError::UnsupportedTransferEncoding => 501,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadRequest(why) => write!(f, "bad request: {why}"),
            ParseError::HeadTooLarge => write!(f, "request head larger than {MAX_HEAD} bytes"),
            ParseError::BodyTooLarge(n) => {
                write!(f, "request body of {n} bytes larger than {MAX_BODY}")
            }
            ParseError::UnsupportedVersion(v) => write!(f, "unsupported http version {v:?}"),
            ParseError::UnsupportedTransferEncoding => {
                write!(f, "transfer-encoding on requests is not supported")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Try to take one request off the front of `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Parse, ParseError> {
    // Tolerate stray CRLFs between pipelined requests (RFC 9112 section 2.2).
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let buf = &buf[skip..];
    let Some(head_len) = find_head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Err(ParseError::HeadTooLarge);
        }
        return Ok(Parse::Partial);
    };
    if head_len > MAX_HEAD {
        return Err(ParseError::HeadTooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| ParseError::BadRequest("request head is not utf-8"))?;
    let mut lines = head
        .split("\r\n")
        .map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let (method, target, version) = parse_request_line(request_line)?;

    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            return Err(ParseError::BadRequest("obsolete header line folding"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::BadRequest("header line without colon"))?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(ParseError::BadRequest("invalid header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }

    let path = target
        .split_once('?')
        .map_or(target, |(p, _)| p)
        .to_string();
    let request = Request {
        method: method.to_string(),
        path,
        http11: version == "HTTP/1.1",
        headers,
    };
    if request.header("transfer-encoding").is_some() {
        return Err(ParseError::UnsupportedTransferEncoding);
    }
    let body_len = match request.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ParseError::BadRequest("invalid content-length"))?,
    };
    if body_len > MAX_BODY {
        return Err(ParseError::BodyTooLarge(body_len));
    }
    // head_len excludes the blank line's CRLF CRLF terminator (4 bytes).
    let consumed = skip + head_len + 4 + body_len;
    if buf.len() < head_len + 4 + body_len {
        return Ok(Parse::Partial);
    }
    Ok(Parse::Complete { request, consumed })
}

/// Offset of the `\r\n\r\n` that ends the head, if buffered.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn parse_request_line(line: &str) -> Result<(&str, &str, &str), ParseError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequest(
            "request line is not 'METHOD TARGET VERSION'",
        ));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(ParseError::BadRequest("invalid method"));
    }
    if !target.starts_with('/') && target != "*" {
        return Err(ParseError::BadRequest(
            "request target must be an absolute path",
        ));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ParseError::UnsupportedVersion(version.to_string()));
    }
    Ok((method, target, version))
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A plain-text response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            body: body.into(),
        }
    }

    /// Serialise to `out`. `head_only` omits the body (HEAD requests) but keeps
    /// its length, `keep_alive` chooses the `Connection` header.
    pub fn write_to(
        &self,
        out: &mut impl Write,
        head_only: bool,
        keep_alive: bool,
    ) -> io::Result<()> {
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            self.status,
            reason(self.status),
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        )
        .into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        out.write_all(&bytes)?;
        out.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse_request(buf) {
            Ok(Parse::Complete { request, consumed }) => (request, consumed),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn parses_simple_get() {
        let raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let (req, consumed) = complete(raw);
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/healthz");
        assert!(req.http11);
        assert_eq!(req.header("HOST"), Some("x"));
        assert_eq!(consumed, raw.len());
    }

    #[test]
    fn strips_query_string() {
        let (req, _) = complete(b"GET /version?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!(req.path, "/version");
    }

    #[test]
    fn incomplete_head_is_partial() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Ok(Parse::Partial)
        );
        assert_eq!(parse_request(b""), Ok(Parse::Partial));
    }

    #[test]
    fn pipelined_requests_are_taken_one_at_a_time() {
        let raw = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let (first, n) = complete(raw);
        assert_eq!(first.path, "/a");
        let (second, m) = complete(&raw[n..]);
        assert_eq!(second.path, "/b");
        assert_eq!(n + m, raw.len());
    }

    #[test]
    fn body_is_consumed_by_content_length() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET";
        let (req, consumed) = complete(raw);
        assert_eq!(req.method, "POST");
        assert_eq!(&raw[consumed..], b"GET");
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel"),
            Ok(Parse::Partial)
        );
    }

    #[test]
    fn leading_blank_lines_are_skipped() {
        let raw = b"\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(complete(raw).1, raw.len());
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        assert!(complete(b"GET / HTTP/1.1\r\n\r\n").0.keep_alive());
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .0
            .keep_alive());
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive());
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive()
        );
    }

    #[test]
    fn rejects_malformed_input() {
        let err = |raw: &[u8]| parse_request(raw).unwrap_err().status();
        assert_eq!(err(b"GET /\r\n\r\n"), 400);
        assert_eq!(err(b"GET / HTTP/1.1 extra\r\n\r\n"), 400);
        assert_eq!(err(b"GET noslash HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(err(b"G(T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(err(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(err(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"), 400);
        assert_eq!(err(b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n"), 400);
        assert_eq!(err(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n"),
            413
        );
    }

    #[test]
    fn oversized_head_is_rejected_even_before_it_ends() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert_eq!(parse_request(&raw), Err(ParseError::HeadTooLarge));
    }

    #[test]
    fn response_serialisation() {
        let mut out = Vec::new();
        Response::text(200, "ok\n")
            .write_to(&mut out, false, true)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
        );
        let mut head = Vec::new();
        Response::text(503, "unhealthy\n")
            .write_to(&mut head, true, false)
            .unwrap();
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("Content-Length: 10\r\n"));
        assert!(head.contains("Connection: close\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
    }
}
