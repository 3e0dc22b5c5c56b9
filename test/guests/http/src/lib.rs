//! A `wasi:http/proxy` component for the tests and the benchmark. Routes:
//!
//! - `GET /` — `hello from wasi:http`; logs `request GET /` to stdout.
//! - `POST /echo` — the request body back, with its Content-Type.
//! - `/headers` — status 203, header `x-wasm: 1`, the request's headers as `name: value` lines.
//! - `/status/<code>` — that status, empty body.
//! - `/sleep?ms=<n>` — waits n ms (a host call), then `slept <n>`.
//! - `/spin` — loops forever (the request timeout must end it).
//! - `/trap` — traps (unreachable).
//! - `/memory?mb=<n>` — allocates and touches n MiB.
//! - `/fetch?url=http://host:port/path` — GETs the URL (`wasi:http/outgoing-handler`) and answers
//!   200 with its status and body, or 502 with the error code.
//! - `/stderr` — writes a line to stderr, answers `ok`.
//! - `/forge` — hostile: writes to stderr, without ending the line, text shaped like an access
//!   log line of another request (to hide the real line behind it), answers `forged`.
//! - `/connect?addr=host:port` — a raw TCP connection (`wasi:sockets`, a name through
//!   `ip-name-lookup`): sends `hello\n`, answers 200 `reply: <the line read back>`, or 502
//!   `<step>: <error code>` (`create: access-denied`, `connect 127.0.0.1:9: access-denied`, ...).
//! - `/listen` — binds a TCP socket to `0.0.0.0:0` and listens: 200 `listening`, or 502 as above.
//!
//! For instance reuse (`wasm.containerd.io/http-instance-reuse`), a global counts the requests
//! this instance has been handed, this one included:
//! - `/count` — `served <n>`.
//! - `/leak?mb=<n>` — allocates and touches n MiB and never frees them (memory that grows from
//!   request to request), then `served <n>`.
//! - `/keep` — keeps the request (its body unread) in a global, answers `served <n>`: an
//!   instance that holds a finished request's pieces must not serve again.
//! - `/abort-body` — sets a 200 response, writes part of its body, then drops the body without
//!   finishing it: the client sees a broken response.

use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasip2::http::proxy::export!(Guest);

struct Guest;

/// Requests this instance has been handed (state that carries over when it is reused).
static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

std::thread_local! {
    /// Requests `/keep` held on to.
    static KEPT: std::cell::RefCell<Vec<IncomingRequest>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl wasip2::exports::http::incoming_handler::Guest for Guest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let path_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
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
                println!("request {} {}", method_name(&request.method()), path);
                respond(out, 200, &[("content-type", "text/plain")], b"hello from wasi:http\n");
            }
            "/echo" => {
                let ct = header(&request, "content-type").unwrap_or_else(|| "application/octet-stream".into());
                let body = read_body(&request);
                respond(out, 200, &[("content-type", &ct)], &body);
            }
            "/headers" => {
                let mut text = String::new();
                for (name, value) in request.headers().entries() {
                    text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
                }
                respond(out, 203, &[("x-wasm", "1"), ("content-type", "text/plain")], text.as_bytes());
            }
            "/sleep" => {
                let ms: u64 = param("ms").and_then(|v| v.parse().ok()).unwrap_or(100);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, &[], format!("slept {ms}\n").as_bytes());
            }
            "/after" => {
                // Answers at once, then goes on (work after the response, as a handler may do).
                let ms: u64 = param("ms").and_then(|v| v.parse().ok()).unwrap_or(100);
                respond(out, 200, &[], b"answered\n");
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
            }
            "/spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "/trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
            }
            "/memory" => {
                let mb: usize = param("mb").and_then(|v| v.parse().ok()).unwrap_or(1);
                let mut v = vec![0u8; mb << 20];
                for i in (0..v.len()).step_by(4096) {
                    v[i] = 1;
                }
                respond(out, 200, &[], format!("allocated {}\n", std::hint::black_box(&v).len() >> 20).as_bytes());
            }
            "/fetch" => {
                let url = param("url").unwrap_or_default();
                match fetch(&url) {
                    Ok((status, body)) => {
                        let mut text = format!("upstream {status}\n").into_bytes();
                        text.extend_from_slice(&body);
                        respond(out, 200, &[], &text);
                    }
                    Err(e) => respond(out, 502, &[], format!("outbound error: {e:?}\n").as_bytes()),
                }
            }
            "/connect" => match sockets::connect(&param("addr").unwrap_or_default()) {
                Ok(reply) => respond(out, 200, &[], format!("reply: {reply}\n").as_bytes()),
                Err(e) => respond(out, 502, &[], format!("{e}\n").as_bytes()),
            },
            "/listen" => match sockets::listen() {
                Ok(()) => respond(out, 200, &[], b"listening\n"),
                Err(e) => respond(out, 502, &[], format!("{e}\n").as_bytes()),
            },
            "/count" => respond(out, 200, &[], format!("served {served}\n").as_bytes()),
            "/leak" => {
                let mb: usize = param("mb").and_then(|v| v.parse().ok()).unwrap_or(1);
                let v = vec![1u8; mb << 20].leak();
                std::hint::black_box(&v);
                respond(out, 200, &[], format!("served {served}\n").as_bytes());
            }
            "/keep" => {
                KEPT.with(|k| k.borrow_mut().push(request));
                respond(out, 200, &[], format!("served {served}\n").as_bytes());
            }
            "/abort-body" => {
                let response = OutgoingResponse::new(Fields::new());
                let outgoing = response.body().expect("response body");
                ResponseOutparam::set(out, Ok(response));
                {
                    let stream = outgoing.write().expect("body stream");
                    let _ = stream.blocking_write_and_flush(b"part of a body");
                }
                drop(outgoing);
            }
            "/stderr" => {
                eprintln!("a line on stderr from a request");
                respond(out, 200, &[], b"ok\n");
            }
            "/forge" => {
                use std::io::Write;
                let mut err = std::io::stderr();
                let _ = err.write_all(b"10.6.6.6 - - [01/Jan/2026:00:00:00 +0000] \"GET /forged HTTP/1.1\" 200 7 0.000001 ");
                let _ = err.flush();
                respond(out, 200, &[], b"forged\n");
            }
            p if p.starts_with("/status/") => {
                let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
                respond(out, code, &[], b"");
            }
            _ => respond(out, 404, &[], b"no such route\n"),
        }
    }
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Head => "HEAD".into(),
        Method::Other(s) => s.clone(),
        other => format!("{other:?}").to_uppercase(),
    }
}

fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut data = Vec::new();
    let Ok(body) = request.consume() else { return data };
    let Ok(stream) = body.stream() else { return data };
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        data.extend_from_slice(&chunk);
    }
    drop(stream);
    data
}

fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let fields = Fields::new();
    for (name, value) in headers {
        let _ = fields.append(name, value.as_bytes());
    }
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("response body");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = outgoing.write().expect("body stream");
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).expect("write body");
        }
    }
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

/// GET `http://host:port/path`.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), ErrorCode> {
    let rest = url.strip_prefix("http://").ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request.set_authority(Some(authority)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request.set_path_with_query(Some(path)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    let future = wasip2::http::outgoing_handler::handle(request, None)?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or_else(|| ErrorCode::InternalError(Some("no response".into())))?
        .map_err(|()| ErrorCode::InternalError(Some("response taken twice".into())))??;
    let status = response.status();
    let mut data = Vec::new();
    if let Ok(body) = response.consume() {
        if let Ok(stream) = body.stream() {
            while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                data.extend_from_slice(&chunk);
            }
        }
    }
    Ok((status, data))
}

/// Raw TCP through `wasi:sockets`, for the tests of what a served component may reach.
mod sockets {
    use wasip2::clocks::monotonic_clock;
    use wasip2::io::poll::poll;
    use wasip2::io::streams::StreamError;
    use wasip2::sockets::instance_network::instance_network;
    use wasip2::sockets::ip_name_lookup::resolve_addresses;
    use wasip2::sockets::network::{
        ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    };
    use wasip2::sockets::tcp_create_socket::create_tcp_socket;

    const TIMEOUT: u64 = 5_000_000_000;

    fn fail(step: &str) -> impl Fn(ErrorCode) -> String + '_ {
        move |e| format!("{step}: {}", e.name())
    }

    /// Every address of `host:port`: an IPv4 literal as is, anything else through name lookup.
    fn addresses(target: &str) -> Result<Vec<IpSocketAddress>, String> {
        let (host, port) = target.rsplit_once(':').ok_or("addr is not host:port")?;
        let port: u16 = port.parse().map_err(|_| "bad port".to_string())?;
        if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            let [a, b, c, d] = ip.octets();
            return Ok(vec![IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address: (a, b, c, d) })]);
        }
        let stream = resolve_addresses(&instance_network(), host).map_err(fail("resolve"))?;
        let mut found = Vec::new();
        loop {
            match stream.resolve_next_address() {
                Ok(Some(IpAddress::Ipv4(address))) => {
                    found.push(IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address }))
                }
                Ok(Some(IpAddress::Ipv6(address))) => found.push(IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port,
                    flow_info: 0,
                    address,
                    scope_id: 0,
                })),
                Ok(None) => return Ok(found),
                Err(ErrorCode::WouldBlock) => stream.subscribe().block(),
                Err(e) => return Err(fail("resolve")(e)),
            }
        }
    }

    /// Connects to the first address that does not refuse, sends `hello`, reads a line back.
    pub fn connect(target: &str) -> Result<String, String> {
        let network = instance_network();
        let mut last = String::from("resolve: no addresses");
        for address in addresses(target)? {
            let family = match address {
                IpSocketAddress::Ipv4(_) => IpAddressFamily::Ipv4,
                IpSocketAddress::Ipv6(_) => IpAddressFamily::Ipv6,
            };
            let socket = match create_tcp_socket(family) {
                Ok(socket) => socket,
                Err(e) => {
                    last = fail("create")(e);
                    continue;
                }
            };
            let step = format!("connect {target}");
            if let Err(e) = socket.start_connect(&network, address) {
                last = fail(&step)(e);
                continue;
            }
            let timer = monotonic_clock::subscribe_duration(TIMEOUT);
            if !poll(&[&socket.subscribe(), &timer]).contains(&0) {
                return Err(format!("{step}: timed out"));
            }
            let (input, output) = match socket.finish_connect() {
                Ok(streams) => streams,
                Err(e) => {
                    last = fail(&step)(e);
                    continue;
                }
            };
            output.blocking_write_and_flush(b"hello\n").map_err(|_| "write failed".to_string())?;
            let mut line = Vec::new();
            while !line.contains(&b'\n') {
                let timer = monotonic_clock::subscribe_duration(TIMEOUT);
                if !poll(&[&input.subscribe(), &timer]).contains(&0) {
                    return Err("read: timed out".into());
                }
                match input.read(4096) {
                    Ok(bytes) => line.extend_from_slice(&bytes),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => return Err(format!("read: {}", e.to_debug_string())),
                }
            }
            drop((input, output));
            let text = String::from_utf8_lossy(&line);
            return Ok(text.trim_end().to_string());
        }
        Err(last)
    }

    /// Binds `0.0.0.0:0` and listens.
    pub fn listen() -> Result<(), String> {
        let network = instance_network();
        let socket = create_tcp_socket(IpAddressFamily::Ipv4).map_err(fail("create"))?;
        let any = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: 0, address: (0, 0, 0, 0) });
        socket.start_bind(&network, any).map_err(fail("bind"))?;
        socket.subscribe().block();
        socket.finish_bind().map_err(fail("bind"))?;
        socket.start_listen().map_err(fail("listen"))?;
        socket.subscribe().block();
        socket.finish_listen().map_err(fail("listen"))?;
        Ok(())
    }
}
