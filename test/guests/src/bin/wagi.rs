//! A WAGI (CGI-style) handler: run once per request with the CGI meta-variables in its
//! environment and the body on stdin; writes headers, a blank line and the body to stdout.
//!
//! - `/redirect` — `Location: /elsewhere` (302).
//! - `/missing` — `Status: 404 Not Found`.
//! - `/garbage` — output with no header section (the shim answers 500).
//! - `/fail` — exits 3 (500).
//! - `/append?file=<path>&words=a,b` — appends the line `a b` to the file: 200 `appended`, or
//!   502 with the error.
//! - `/rename?from=<path>&to=<path>` — renames: 200 `renamed`, or 502 with the error.
//! - `/env` — 200, `text/plain`: its whole environment, one `NAME=value` per line.
//! - anything else — 200, `text/plain`: method, path, query, the `X-Test` header, the body.
use std::io::{Read, Write};

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let path = var("PATH_INFO");
    let mut out = std::io::stdout().lock();
    let query = var("QUERY_STRING");
    let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).unwrap_or_default().to_string();
    match path.as_str() {
        "/redirect" => {
            let _ = write!(out, "Location: /elsewhere\n\n");
        }
        "/missing" => {
            let _ = write!(out, "Status: 404 Not Found\nContent-Type: text/plain\n\nnot here\n");
        }
        "/garbage" => {
            let _ = write!(out, "just some text without headers");
        }
        "/env" => {
            let _ = write!(out, "Content-Type: text/plain\n\n");
            for (name, value) in std::env::vars() {
                let _ = writeln!(out, "{name}={value}");
            }
        }
        "/rename" => {
            // What a guest would do to put its own /etc in place of the protected one.
            let (from, to) = (param("from"), param("to"));
            let _ = match std::fs::rename(&from, &to) {
                Ok(()) => write!(out, "Content-Type: text/plain\n\nrenamed\n"),
                Err(e) => write!(out, "Status: 502 Bad Gateway\nContent-Type: text/plain\n\n{from} -> {to}: {e}\n"),
            };
        }
        "/append" => {
            // `file` and `words` (comma-separated) from the query: the line `words` appended to
            // `file`, what a guest would do to /etc/hosts or /etc/resolv.conf to move a name.
            let (file, line) = (param("file"), param("words").replace(',', " "));
            let written = std::fs::OpenOptions::new().append(true).create(true).open(&file).and_then(|mut f| writeln!(f, "{line}"));
            let _ = match written {
                Ok(()) => write!(out, "Content-Type: text/plain\n\nappended\n"),
                Err(e) => write!(out, "Status: 502 Bad Gateway\nContent-Type: text/plain\n\n{file}: {e}\n"),
            };
        }
        "/fail" => {
            eprintln!("wagi guest: failing on purpose");
            std::process::exit(3);
        }
        _ => {
            let mut body = String::new();
            let _ = std::io::stdin().read_to_string(&mut body);
            let _ = write!(
                out,
                "Content-Type: text/plain\r\nX-Wagi: 1\r\n\r\nmethod={} path={} query={} x-test={} length={} body={}\n",
                var("REQUEST_METHOD"),
                path,
                var("QUERY_STRING"),
                var("HTTP_X_TEST"),
                var("CONTENT_LENGTH"),
                body
            );
        }
    }
}
