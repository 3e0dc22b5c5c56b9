//! A TCP peer on WASI preview 2 sockets (`wasi:sockets/tcp`), for the networking tests: a wasm
//! app and a native process (the host, a pod's sidecar) talking over TCP in both directions.
//!
//!     tcp serve <port> [--once]      listen on 0.0.0.0:<port> (0: any free port); once bound
//!                                    print "listening on <port>"; for each connection read one
//!                                    line, answer "wasm got: <line>\n" and print
//!                                    "served <peer>: <line>"; with --once exit 0 after the
//!                                    first connection, otherwise serve until killed
//!     tcp connect <host:port> <msg>  connect, retrying for up to 10 s while refused (so a peer
//!                                    that starts later still works), send "<msg>\n", read the
//!                                    reply up to a newline or end of file, print
//!                                    "reply: <reply>"
//!
//! Any error: one line on stderr, exit status 1.
//!
//! Built for wasm32-wasip1 like the other guests, with the sockets calls made through the
//! `wasip2` bindings (WASI 0.2.12, the version wasmtime 48 and its preview1 adapter speak). The
//! e2e harness wraps it into a component with the preview1 command adapter, so it runs on the
//! WASI p2 linker; as a bare core module it cannot be instantiated.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::exit;

use wasip2::clocks::monotonic_clock;
use wasip2::io::poll::{poll, Pollable};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::ip_name_lookup::resolve_addresses;
use wasip2::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    Network,
};
use wasip2::sockets::tcp::{ShutdownType, TcpSocket};
use wasip2::sockets::tcp_create_socket::create_tcp_socket;

const SECOND: u64 = 1_000_000_000;
/// How long `connect` keeps retrying a refused connection.
const CONNECT_RETRY: u64 = 10 * SECOND;
/// Pause between two connection attempts.
const RETRY_PAUSE: u64 = SECOND / 5;
/// How long a peer may take to send its line (server) or its reply (client).
const LINE_TIMEOUT: u64 = 30 * SECOND;
/// Longest line accepted.
const MAX_LINE: usize = 64 << 10;

const USAGE: &str = "usage: tcp serve <port> [--once] | tcp connect <host:port> <message>";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["serve", rest @ ..] => {
            let once = rest.contains(&"--once");
            match rest.iter().filter(|a| **a != "--once").collect::<Vec<_>>()[..] {
                [port] => match port.parse::<u16>() {
                    Ok(port) => serve(port, once),
                    Err(_) => Err(format!("serve: bad port {port:?}")),
                },
                _ => Err(USAGE.to_string()),
            }
        }
        ["connect", target, message] => connect(target, message),
        _ => Err(USAGE.to_string()),
    };
    if let Err(message) = result {
        let _ = std::io::stdout().flush();
        eprintln!("tcp: {message}");
        exit(1);
    }
}

fn serve(port: u16, once: bool) -> Result<(), String> {
    let network = instance_network();
    let listener = create_tcp_socket(IpAddressFamily::Ipv4).map_err(|e| fail("socket", e))?;
    let any = IpSocketAddress::Ipv4(Ipv4SocketAddress {
        port,
        address: (0, 0, 0, 0),
    });
    listener
        .start_bind(&network, any)
        .map_err(|e| fail(&format!("bind 0.0.0.0:{port}"), e))?;
    listener.subscribe().block();
    listener
        .finish_bind()
        .map_err(|e| fail(&format!("bind 0.0.0.0:{port}"), e))?;
    listener.start_listen().map_err(|e| fail("listen", e))?;
    listener.subscribe().block();
    listener.finish_listen().map_err(|e| fail("listen", e))?;
    let bound = match listener.local_address() {
        Ok(IpSocketAddress::Ipv4(a)) => a.port,
        Ok(IpSocketAddress::Ipv6(a)) => a.port,
        Err(_) => port,
    };
    say(&format!("listening on {bound}"));

    loop {
        let (conn, input, output) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(ErrorCode::WouldBlock) => listener.subscribe().block(),
                Err(e) => return Err(fail("accept", e)),
            }
        };
        let peer = conn
            .remote_address()
            .map(|a| show(&a))
            .unwrap_or_else(|_| "?".into());
        let result = answer(&conn, &input, &output);
        // Streams before their socket.
        drop((input, output));
        drop(conn);
        match result {
            Ok(line) => say(&format!("served {peer}: {line}")),
            Err(e) if once => return Err(format!("connection from {peer}: {e}")),
            Err(e) => eprintln!("tcp: connection from {peer}: {e}"),
        }
        if once {
            return Ok(());
        }
    }
}

/// Reads one line from a client and answers it; returns the line.
fn answer(conn: &TcpSocket, input: &InputStream, output: &OutputStream) -> Result<String, String> {
    let line = read_line(input, after(LINE_TIMEOUT))?.ok_or("closed before sending a line")?;
    write_all(output, format!("wasm got: {line}\n").as_bytes())?;
    // End of file for a client that reads to the end.
    let _ = conn.shutdown(ShutdownType::Send);
    Ok(line)
}

fn connect(target: &str, message: &str) -> Result<(), String> {
    let network = instance_network();
    let addresses = resolve(&network, target)?;
    let deadline = after(CONNECT_RETRY);
    let (conn, input, output) = 'connected: loop {
        for address in &addresses {
            match try_connect(&network, *address, deadline) {
                Ok(connected) => break 'connected connected,
                Err(ErrorCode::ConnectionRefused) => {}
                Err(ErrorCode::Timeout) => {
                    return Err(format!("connect {target}: timed out after 10 s"))
                }
                Err(e) => return Err(fail(&format!("connect {target}"), e)),
            }
        }
        if monotonic_clock::now() + RETRY_PAUSE > deadline {
            return Err(format!(
                "connect {target}: connection refused (retried for 10 s)"
            ));
        }
        monotonic_clock::subscribe_duration(RETRY_PAUSE).block();
    };
    write_all(&output, format!("{message}\n").as_bytes())
        .map_err(|e| format!("send to {target}: {e}"))?;
    let reply = read_line(&input, after(LINE_TIMEOUT))
        .map_err(|e| format!("reply from {target}: {e}"))?
        .ok_or_else(|| format!("reply from {target}: connection closed without a reply"))?;
    drop((input, output));
    drop(conn);
    say(&format!("reply: {reply}"));
    Ok(())
}

/// One connection attempt on a fresh socket (a socket whose connect failed cannot be reused).
fn try_connect(
    network: &Network,
    address: IpSocketAddress,
    deadline: u64,
) -> Result<(TcpSocket, InputStream, OutputStream), ErrorCode> {
    let family = match address {
        IpSocketAddress::Ipv4(_) => IpAddressFamily::Ipv4,
        IpSocketAddress::Ipv6(_) => IpAddressFamily::Ipv6,
    };
    let socket = create_tcp_socket(family)?;
    socket.start_connect(network, address)?;
    if !wait(&socket.subscribe(), deadline) {
        return Err(ErrorCode::Timeout);
    }
    let (input, output) = socket.finish_connect()?;
    Ok((socket, input, output))
}

/// `host:port` → socket addresses: an IP literal (`[v6]:port` too) as is, a name through
/// `wasi:sockets/ip-name-lookup`.
fn resolve(network: &Network, target: &str) -> Result<Vec<IpSocketAddress>, String> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(vec![to_wasi(addr.ip(), addr.port())]);
    }
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("connect: {target:?} is not <host:port>"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("connect: bad port in {target:?}"))?;
    let stream =
        resolve_addresses(network, host).map_err(|e| fail(&format!("resolve {host}"), e))?;
    let mut addresses = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(IpAddress::Ipv4(a))) => {
                addresses.push(to_wasi([a.0, a.1, a.2, a.3].into(), port))
            }
            Ok(Some(IpAddress::Ipv6(a))) => addresses.push(to_wasi(
                [a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7].into(),
                port,
            )),
            Ok(None) => break,
            Err(ErrorCode::WouldBlock) => stream.subscribe().block(),
            Err(e) => return Err(fail(&format!("resolve {host}"), e)),
        }
    }
    if addresses.is_empty() {
        return Err(format!("resolve {host}: no addresses"));
    }
    Ok(addresses)
}

fn to_wasi(ip: IpAddr, port: u16) -> IpSocketAddress {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port,
                address: (a, b, c, d),
            })
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port,
                flow_info: 0,
                address: (a, b, c, d, e, f, g, h),
                scope_id: 0,
            })
        }
    }
}

fn show(address: &IpSocketAddress) -> String {
    match address {
        IpSocketAddress::Ipv4(a) => {
            let (w, x, y, z) = a.address;
            format!("{w}.{x}.{y}.{z}:{}", a.port)
        }
        IpSocketAddress::Ipv6(a) => {
            let (s0, s1, s2, s3, s4, s5, s6, s7) = a.address;
            let ip = std::net::Ipv6Addr::new(s0, s1, s2, s3, s4, s5, s6, s7);
            format!("[{ip}]:{}", a.port)
        }
    }
}

/// Reads up to a newline (not included, nor a `\r` before it) or end of file. `None`: end of
/// file before any byte.
fn read_line(input: &InputStream, deadline: u64) -> Result<Option<String>, String> {
    let mut line = Vec::new();
    loop {
        match input.read(4096) {
            Ok(bytes) if bytes.is_empty() => {
                if !wait(&input.subscribe(), deadline) {
                    return Err("timed out waiting for a line".into());
                }
            }
            Ok(bytes) => {
                if let Some(at) = bytes.iter().position(|b| *b == b'\n') {
                    line.extend_from_slice(&bytes[..at]);
                    break;
                }
                line.extend_from_slice(&bytes);
                if line.len() > MAX_LINE {
                    return Err(format!("line longer than {MAX_LINE} bytes"));
                }
            }
            Err(StreamError::Closed) if line.is_empty() => return Ok(None),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("read: {}", e.to_debug_string()))
            }
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn write_all(output: &OutputStream, mut bytes: &[u8]) -> Result<(), String> {
    while !bytes.is_empty() {
        // `blocking-write-and-flush` takes at most 4096 bytes.
        let n = bytes.len().min(4096);
        output
            .blocking_write_and_flush(&bytes[..n])
            .map_err(|e| match e {
                StreamError::Closed => "write: connection closed".to_string(),
                StreamError::LastOperationFailed(e) => format!("write: {}", e.to_debug_string()),
            })?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Blocks until `pollable` is ready (true) or the monotonic clock reaches `deadline` (false).
fn wait(pollable: &Pollable, deadline: u64) -> bool {
    let timer = monotonic_clock::subscribe_instant(deadline);
    poll(&[pollable, &timer]).contains(&0)
}

fn after(nanos: u64) -> u64 {
    monotonic_clock::now().saturating_add(nanos)
}

fn fail(what: &str, e: ErrorCode) -> String {
    format!("{what}: {}", e.name())
}

/// A line on stdout, flushed at once (a test or `kubectl logs` waits for it).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
