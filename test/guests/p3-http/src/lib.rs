//! A WASI 0.3 `wasi:http/service` component for the tests (`wasi:http/handler@0.3.0`, async).
//! Routes:
//!
//! - `GET /` — `hello from wasi:http 0.3`; logs `p3 request GET /` to stdout.
//! - `POST /echo` — the request body back.
//! - `/sleep?ms=<n>` — waits n ms (`wasi:clocks/monotonic-clock.wait-for`), then `slept <n>`.
//! - `/spin` — loops forever (the request timeout must end it).
//! - `/trap` — traps (unreachable).
//! - `/memory?mb=<n>` — allocates and touches n MiB.
//! - `/stream?n=<k>` — a body of k lines `line <i>`, written after the response is returned
//!   (the body outlives `handle`).
//! - `/fetch?url=http://host:port/path` — GETs the URL (`wasi:http/client.send`) and answers 200
//!   with its status and body, or 502 with the error code.

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Service);

struct Service;

/// A response with `status` and a body written by a task of its own once `handle` returned.
fn respond(status: u16, body: Vec<u8>) -> Response {
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("valid header");
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    response.set_status_code(status).expect("valid status");
    wit_bindgen::spawn_local(async move {
        let _ = body_tx.write_all(body).await;
    });
    response
}

/// Reads a whole body.
async fn read_body(request: Request) -> Vec<u8> {
    let (_done_tx, done_rx) = wit_future::new(|| Ok(()));
    let (mut body, _trailers) = Request::consume_body(request, done_rx);
    let mut all = Vec::new();
    loop {
        let (status, chunk) = body.read(Vec::with_capacity(16 << 10)).await;
        all.extend_from_slice(&chunk);
        if !matches!(status, wit_bindgen::StreamResult::Complete(_)) {
            break;
        }
    }
    all
}

impl wasip3::exports::http::handler::Guest for Service {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path_query = request.get_path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_query.clone(), String::new()),
        };
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
        };
        match path.as_str() {
            "/" => {
                let method = match request.get_method() {
                    Method::Get => "GET".to_string(),
                    Method::Post => "POST".to_string(),
                    other => format!("{other:?}"),
                };
                println!("p3 request {method} {path}");
                Ok(respond(200, b"hello from wasi:http 0.3\n".to_vec()))
            }
            "/echo" => Ok(respond(200, read_body(request).await)),
            "/sleep" => {
                let ms: u64 = param("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                Ok(respond(200, format!("slept {ms}\n").into_bytes()))
            }
            "/spin" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/trap" => core::arch::wasm32::unreachable(),
            "/memory" => {
                let mb: usize = param("mb").and_then(|v| v.parse().ok()).unwrap_or(0);
                let v = vec![1u8; mb << 20];
                let sum: usize = v.iter().map(|b| *b as usize).sum();
                Ok(respond(200, format!("touched {} MiB\n", sum >> 20).into_bytes()))
            }
            "/stream" => {
                let n: usize = param("n").and_then(|v| v.parse().ok()).unwrap_or(0);
                let body: String = (0..n).map(|i| format!("line {i}\n")).collect();
                Ok(respond(200, body.into_bytes()))
            }
            "/fetch" => {
                let Some(url) = param("url") else {
                    return Ok(respond(400, b"url missing\n".to_vec()));
                };
                Ok(match fetch(&url).await {
                    Ok((status, body)) => {
                        let mut text = format!("status {status}\n").into_bytes();
                        text.extend_from_slice(&body);
                        respond(200, text)
                    }
                    Err(code) => respond(502, format!("{code:?}\n").into_bytes()),
                })
            }
            _ => Ok(respond(404, b"not found\n".to_vec())),
        }
    }
}

/// GET `url` (`http://host[:port]/path`) with `wasi:http/client.send`.
async fn fetch(url: &str) -> Result<(u16, Vec<u8>), ErrorCode> {
    let rest = url.strip_prefix("http://").ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (request, _sent) = Request::new(Fields::new(), None, trailers_rx, None);
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request.set_authority(Some(authority)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request.set_path_with_query(Some(path)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    let response = wasip3::http::client::send(request).await?;
    let status = response.get_status_code();
    let (_done_tx, done_rx) = wit_future::new(|| Ok(()));
    let (mut body, _trailers) = Response::consume_body(response, done_rx);
    let mut all = Vec::new();
    loop {
        let (result, chunk) = body.read(Vec::with_capacity(16 << 10)).await;
        all.extend_from_slice(&chunk);
        if !matches!(result, wit_bindgen::StreamResult::Complete(_)) {
            break;
        }
    }
    Ok((status, all))
}
