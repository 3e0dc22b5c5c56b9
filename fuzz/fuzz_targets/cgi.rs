//! CGI response parsing (what a WAGI program writes to stdout) and the request meta-variables:
//! never panics; a parsed response's body offset is within the output and its headers are
//! single-line; the environment always has the CGI 1.1 variables and never `HTTP_PROXY`
//! (httpoxy).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasm_shim_engine::cgi::{environment, parse_response, CgiRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_response(data) {
        assert!(r.body_start <= data.len());
        assert!((100..=999).contains(&r.status));
        for (name, value) in &r.headers {
            assert!(!name.is_empty() && !name.contains(['\n', '\r', ':']));
            assert!(!value.contains(['\n', '\r']));
        }
    }
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, ' ');
    let (method, target, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let headers: Vec<(&str, &str)> = rest.lines().filter_map(|l| l.split_once(':')).collect();
    let env = environment(&CgiRequest {
        method,
        target,
        headers,
        content_length: data.len(),
        remote_addr: "127.0.0.1".into(),
        server_port: 8080,
        protocol: "HTTP/1.1",
    });
    assert!(env.iter().any(|(k, _)| k == "GATEWAY_INTERFACE"));
    assert!(env.iter().any(|(k, v)| k == "REQUEST_METHOD" && v == method));
    assert!(!env.iter().any(|(k, _)| k == "HTTP_PROXY"));
});
