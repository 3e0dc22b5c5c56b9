//! CGI 1.1 (RFC 3875) as WAGI uses it: the meta-variables a request becomes, and the response a
//! program writes to stdout (header lines, a blank line, the body). Pure functions, fuzzed.

use std::fmt;

/// Largest header section a program may write before its body.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Meta-variables a request header must never become. `Proxy: x` would be `HTTP_PROXY=x`,
/// which HTTP libraries read as the proxy for their outbound requests: a client could route the
/// program's outbound traffic through a host of its choosing ("httpoxy", CVE-2016-5385). The
/// header is dropped; the container's own `HTTP_PROXY`, if its spec sets one, is untouched.
pub const DROPPED: &[&str] = &["HTTP_PROXY"];

/// What the environment of one request is built from (strings only: no HTTP library here).
#[derive(Debug, Clone, Default)]
pub struct CgiRequest<'a> {
    pub method: &'a str,
    /// The request target as sent: `/path?query`.
    pub target: &'a str,
    /// Header names (any case) and values, in request order; repeated names are joined.
    pub headers: Vec<(&'a str, &'a str)>,
    /// Bytes of the body the program gets on stdin.
    pub content_length: usize,
    pub remote_addr: String,
    pub server_port: u16,
    /// `HTTP/1.1`, `HTTP/1.0`.
    pub protocol: &'a str,
}

/// The meta-variables of a request, in a stable order: RFC 3875 section 4.1, WAGI's `X_FULL_URL`
/// and `X_MATCHED_ROUTE`, then one `HTTP_*` per header (except `Content-Type` and
/// `Content-Length`, which have their own, and `Proxy`, which is dropped: see [`DROPPED`]).
pub fn environment(req: &CgiRequest) -> Vec<(String, String)> {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.target, ""),
    };
    let path = if path.is_empty() { "/" } else { path };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let host = header("host").unwrap_or("localhost");
    let server_name = match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let path_info = percent_decode(path);
    let mut env: Vec<(String, String)> = vec![
        ("AUTH_TYPE".into(), String::new()),
        ("CONTENT_LENGTH".into(), req.content_length.to_string()),
        ("CONTENT_TYPE".into(), header("content-type").unwrap_or("").into()),
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("PATH_INFO".into(), path_info.clone()),
        ("PATH_TRANSLATED".into(), path_info),
        ("QUERY_STRING".into(), query.into()),
        ("REMOTE_ADDR".into(), req.remote_addr.clone()),
        ("REMOTE_HOST".into(), req.remote_addr.clone()),
        ("REMOTE_USER".into(), String::new()),
        ("REQUEST_METHOD".into(), req.method.into()),
        ("SCRIPT_NAME".into(), String::new()),
        ("SERVER_NAME".into(), server_name.into()),
        ("SERVER_PORT".into(), req.server_port.to_string()),
        ("SERVER_PROTOCOL".into(), req.protocol.into()),
        ("SERVER_SOFTWARE".into(), "containerd-shim-wasm-v1".into()),
        ("X_FULL_URL".into(), format!("http://{host}{}", req.target)),
        ("X_MATCHED_ROUTE".into(), "/...".into()),
    ];
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let var = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        if DROPPED.contains(&var.as_str()) {
            continue;
        }
        match env.iter_mut().find(|(k, _)| *k == var) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(value);
            }
            None => env.push((var, value.to_string())),
        }
    }
    env
}

/// `%2F` and friends decoded; a malformed escape is kept as written; invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed CGI response: status, the headers to send (without `Status`), and where the body
/// starts in the program's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body_start: usize,
}

/// Why a program's output is not a CGI response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiError(pub String);

impl fmt::Display for CgiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed CGI response: {}", self.0)
    }
}

impl std::error::Error for CgiError {}

/// Parses what a CGI program wrote: header lines (`Name: value`, ending in `\n` or `\r\n`), a
/// blank line, the body. `Status: 404 Not Found` sets the status; `Location` without `Status`
/// is a 302 redirect; otherwise 200. At least one of `Content-Type`, `Location` or `Status` must
/// be there (RFC 3875 section 6.2).
pub fn parse_response(out: &[u8]) -> Result<CgiResponse, CgiError> {
    let err = |m: String| Err(CgiError(m));
    if out.is_empty() {
        return err("the program wrote nothing".into());
    }
    let mut headers = Vec::new();
    let mut status = None;
    let mut pos = 0;
    let mut line_no = 0;
    loop {
        if pos >= MAX_HEADER_BYTES {
            return err(format!("no blank line within the first {MAX_HEADER_BYTES} bytes"));
        }
        let Some(nl) = out[pos..].iter().position(|&b| b == b'\n') else {
            return err("no blank line ends the headers".into());
        };
        line_no += 1;
        let mut line = &out[pos..pos + nl];
        pos += nl + 1;
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if line.is_empty() {
            break;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return err(format!("header line {line_no} is not UTF-8"));
        };
        let Some((name, value)) = text.split_once(':') else {
            return err(format!("header line {line_no} {:?} has no ':'", truncate(text)));
        };
        if name.is_empty() || !name.bytes().all(is_token) {
            return err(format!("header line {line_no}: {:?} is not a header name", truncate(name)));
        }
        let value = value.trim();
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return err(format!("header {name}: control characters in the value"));
        }
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            match code.parse::<u16>() {
                Ok(c) if (100..=999).contains(&c) && code.len() == 3 => status = Some(c),
                _ => return err(format!("Status {:?} is not a three-digit code", truncate(value))),
            }
        } else {
            headers.push((name.to_string(), value.to_string()));
        }
    }
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let status = match status {
        Some(s) => s,
        None if has("location") => 302,
        None if has("content-type") => 200,
        None => return err("no Content-Type, Location or Status header".into()),
    };
    Ok(CgiResponse { status, headers, body_start: pos })
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn request_meta_variables() {
        let req = CgiRequest {
            method: "POST",
            target: "/a%20b/c?x=1&y=%20",
            headers: vec![
                ("Host", "example.com:8080"),
                ("Content-Type", "text/plain"),
                ("X-Trace", "1"),
                ("x-trace", "2"),
                ("Content-Length", "5"),
            ],
            content_length: 5,
            remote_addr: "10.0.0.7".into(),
            server_port: 8080,
            protocol: "HTTP/1.1",
        };
        let env = environment(&req);
        assert_eq!(var(&env, "REQUEST_METHOD"), "POST");
        assert_eq!(var(&env, "PATH_INFO"), "/a b/c");
        assert_eq!(var(&env, "QUERY_STRING"), "x=1&y=%20");
        assert_eq!(var(&env, "CONTENT_TYPE"), "text/plain");
        assert_eq!(var(&env, "CONTENT_LENGTH"), "5");
        assert_eq!(var(&env, "SERVER_NAME"), "example.com");
        assert_eq!(var(&env, "SERVER_PORT"), "8080");
        assert_eq!(var(&env, "REMOTE_ADDR"), "10.0.0.7");
        assert_eq!(var(&env, "HTTP_X_TRACE"), "1, 2");
        assert_eq!(var(&env, "X_FULL_URL"), "http://example.com:8080/a%20b/c?x=1&y=%20");
        assert!(!env.iter().any(|(k, _)| k == "HTTP_CONTENT_TYPE" || k == "HTTP_CONTENT_LENGTH"));
    }

    #[test]
    fn proxy_header_never_becomes_http_proxy() {
        for name in ["Proxy", "proxy", "PROXY", "pRoXy"] {
            let req = CgiRequest {
                method: "GET",
                target: "/",
                headers: vec![(name, "http://evil.example:8888"), ("X-Proxy", "kept"), ("Proxy-Authorization", "kept too")],
                ..Default::default()
            };
            let env = environment(&req);
            assert!(!env.iter().any(|(k, _)| k == "HTTP_PROXY"), "{name}: {env:?}");
            assert!(!env.iter().any(|(_, v)| v.contains("evil")), "{name}: {env:?}");
            assert_eq!(var(&env, "HTTP_X_PROXY"), "kept");
            assert_eq!(var(&env, "HTTP_PROXY_AUTHORIZATION"), "kept too");
        }
    }

    #[test]
    fn malformed_escapes_are_kept() {
        assert_eq!(percent_decode("/%zz/%4"), "/%zz/%4");
        assert_eq!(percent_decode("/%41%"), "/A%");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn responses() {
        let out = b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nhello";
        let r = parse_response(out).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.headers, vec![("Content-Type".into(), "text/plain".into()), ("X-A".into(), "1".into())]);
        assert_eq!(&out[r.body_start..], b"hello");

        let r = parse_response(b"Status: 404 Not Found\nContent-Type: text/html\n\n").unwrap();
        assert_eq!((r.status, r.headers.len()), (404, 1));
        let r = parse_response(b"Location: /elsewhere\n\n").unwrap();
        assert_eq!(r.status, 302);
        let r = parse_response(b"Status: 201\n\nbody\n\nmore").unwrap();
        assert_eq!(r.status, 201);
    }

    #[test]
    fn malformed_responses_say_why() {
        for (out, why) in [
            (&b""[..], "wrote nothing"),
            (b"hello world", "no blank line"),
            (b"hello world\n\n", "has no ':'"),
            (b"X-A: 1\n\nbody", "no Content-Type, Location or Status"),
            (b"Status: abc\n\n", "three-digit"),
            (b"Status: 2000\n\n", "three-digit"),
            (b"Bad Name: x\n\n", "not a header name"),
            (b"X: a\x01b\n\n", "control characters"),
        ] {
            let e = parse_response(out).unwrap_err().to_string();
            assert!(e.contains(why), "{out:?}: {e}");
        }
        let big = vec![b'a'; MAX_HEADER_BYTES + 10];
        assert!(parse_response(&big).is_err());
    }
}
