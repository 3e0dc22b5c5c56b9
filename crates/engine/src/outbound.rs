//! Where a served workload may reach (`http-allowed-outbound`): the allow-list's entries, whether
//! a `wasi:http` request may go to a URI, and whether a `wasi:sockets` socket may use an address.
//! One list for both, so a guest cannot step around the `wasi:http` check with a raw socket.
//!
//! Sockets: `connect` (TCP) and `send`/`receive` (UDP) only to addresses an entry allows; `bind`
//! only to the wildcard address with port 0, which is what the implicit bind of a `connect` or a
//! `send` checks (a listener, or a socket on a chosen local port, is never needed to answer a
//! request); `listen` and `accept` never. With an empty list, TCP, UDP and name lookup are off
//! altogether.
//!
//! Names: an entry names a host, a socket sees an IP address. A name entry allows the addresses
//! the name resolves to through the resolver the guest's own `ip-name-lookup` uses (getaddrinfo
//! in the container: its `/etc/hosts` and `/etc/resolv.conf`). Each address a name resolved to
//! is remembered for [`NAME_TTL`], so the answer the guest got a moment before ours still counts
//! under round-robin DNS; an address not remembered makes the check resolve the names again
//! (negative answers are not cached: a guest asking again only costs lookups, which it could
//! make itself).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpHooks;

/// How long an address a name resolved to stays allowed after it was last seen.
pub(crate) const NAME_TTL: Duration = Duration::from_secs(30);

/// How long a check waits for the resolver before denying.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One entry of the allow-list: `*`, or `[scheme://]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    Any,
    Host {
        scheme: Option<String>,
        /// Lowercase, without IPv6 brackets.
        host: String,
        /// `host` when it is an IP literal.
        ip: Option<IpAddr>,
        port: Option<u16>,
    },
}

impl Rule {
    pub(crate) fn parse(entry: &str) -> Result<Rule, String> {
        let entry = entry.trim();
        if entry == "*" {
            return Ok(Rule::Any);
        }
        let (scheme, rest) = match entry.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
            None => (None, entry),
        };
        let rest = rest.trim_end_matches('/');
        let authority: http::uri::Authority = rest
            .parse()
            .map_err(|_| format!("{entry:?} is not [scheme://]host[:port]"))?;
        if matches!(scheme.as_deref(), Some(s) if s != "http" && s != "https") {
            return Err(format!("{entry:?}: only http and https can be allowed"));
        }
        let host = authority.host().trim_matches(['[', ']']).to_ascii_lowercase();
        Ok(Rule::Host {
            scheme,
            ip: host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical()),
            host,
            port: authority.port_u16(),
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this rule.
    pub(crate) fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        match self {
            Rule::Any => true,
            Rule::Host { scheme: s, host: h, .. } => {
                let host = host.trim_matches(['[', ']']);
                h.eq_ignore_ascii_case(host)
                    && s.as_deref().is_none_or(|s| s == scheme)
                    && self.allows_port(port)
            }
        }
    }

    /// A rule without a port allows the scheme's default port when it names a scheme, any port
    /// when it does not. A socket has no scheme: `https://h` allows port 443 of `h`'s addresses.
    fn allows_port(&self, port: u16) -> bool {
        match self {
            Rule::Any => true,
            Rule::Host { scheme, port: p, .. } => match (p, scheme.as_deref()) {
                (Some(p), _) => *p == port,
                (None, Some(s)) => port == default_port(s),
                (None, None) => true,
            },
        }
    }
}

/// Whether the allow-list `entries` (as `ServeLimits::allowed_outbound`) lets a request go to
/// `url`; `false` for an unusable list or URL.
pub fn allows_url(entries: &[String], url: &str) -> bool {
    match (AllowList::parse(entries), url.parse::<http::Uri>()) {
        (Ok(list), Ok(uri)) => list.allows_uri(&uri),
        _ => false,
    }
}

pub(crate) fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// The parsed allow-list, and the addresses its names resolved to.
#[derive(Debug, Default)]
pub(crate) struct AllowList {
    rules: Vec<Rule>,
    /// Name → (address, when last seen).
    seen: Mutex<HashMap<String, Vec<(IpAddr, Instant)>>>,
}

impl AllowList {
    /// The annotation's entries; an error names the bad one.
    pub(crate) fn parse(entries: &[String]) -> Result<AllowList, String> {
        let rules = entries.iter().map(|e| Rule::parse(e)).collect::<Result<_, _>>()?;
        Ok(AllowList { rules, seen: Mutex::default() })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a `wasi:http` request may go to `uri` (matched by name, as the request names it).
    pub(crate) fn allows_uri(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let Some(host) = uri.host() else { return false };
        let port = uri.port_u16().unwrap_or_else(|| default_port(&scheme));
        self.rules.iter().any(|r| r.allows(&scheme, host, port))
    }

    /// Whether a socket may be used with `addr` this way (see the module doc).
    pub(crate) async fn allows_socket(&self, addr: SocketAddr, how: SocketAddrUse) -> bool {
        match how {
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                addr.ip().is_unspecified() && addr.port() == 0
            }
            SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                self.allows_peer(addr).await
            }
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
        }
    }

    /// Whether an entry allows talking to `addr`: an IP entry equal to it, or a name entry that
    /// resolves to it, with the port allowed.
    async fn allows_peer(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        let rules = || self.rules.iter().filter(|r| r.allows_port(addr.port()));
        let mut names = Vec::new();
        for rule in rules() {
            match rule {
                Rule::Any => return true,
                Rule::Host { ip: Some(allowed), .. } if *allowed == ip => return true,
                Rule::Host { ip: Some(_), .. } => {}
                Rule::Host { host, ip: None, .. } => names.push(host.as_str()),
            }
        }
        if names.is_empty() {
            return false;
        }
        if names.iter().any(|n| self.remembered(n, ip, Instant::now())) {
            return true;
        }
        for name in names {
            let found = resolve(name).await;
            if self.remember(name, &found, Instant::now()) && found.contains(&ip) {
                return true;
            }
        }
        false
    }

    /// Whether `name` resolved to `ip` within `NAME_TTL` before `now`.
    fn remembered(&self, name: &str, ip: IpAddr, now: Instant) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(name)
            .is_some_and(|addrs| addrs.iter().any(|(a, at)| *a == ip && now.duration_since(*at) < NAME_TTL))
    }

    /// Records that `name` resolved to `found` at `now`, forgetting addresses older than
    /// `NAME_TTL`. True if anything was found.
    fn remember(&self, name: &str, found: &[IpAddr], now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let addrs = seen.entry(name.to_string()).or_default();
        addrs.retain(|(a, at)| !found.contains(a) && now.duration_since(*at) < NAME_TTL);
        addrs.extend(found.iter().map(|a| (*a, now)));
        !found.is_empty()
    }
}

/// `name`'s addresses, as the guest's `ip-name-lookup` would get them; none on failure or
/// after `RESOLVE_TIMEOUT`.
async fn resolve(name: &str) -> Vec<IpAddr> {
    // Its own task: the lookup's future need not be `Sync`, which the check's must be.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Vec::new();
    };
    let name = name.to_string();
    let lookup = runtime.spawn(async move {
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0))).await {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip().to_canonical()).collect(),
            _ => Vec::new(),
        }
    });
    lookup.await.unwrap_or_default()
}

/// The allow-list of one served workload, named in the lines a denial writes to its log.
#[derive(Clone)]
pub(crate) struct Outbound {
    pub(crate) list: Arc<AllowList>,
    pub(crate) file: Arc<str>,
    /// What the user calls the list (`LimitNames::allowed_outbound`).
    pub(crate) name: &'static str,
    /// The span of the request whose guest makes the calls, when requests are traced: each
    /// allowed call gets a CLIENT span and its `traceparent`.
    pub(crate) trace: Option<crate::serve::trace::ClientTrace>,
}

type Check = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

impl Outbound {
    pub(crate) fn new(list: AllowList, file: &str, name: &'static str) -> Outbound {
        Outbound { list: Arc::new(list), file: file.into(), name, trace: None }
    }

    /// A line in the container's log (where the function's author looks) and the shim's.
    pub(crate) fn denied(&self, what: &str) {
        let line = format!("{}: {what} denied: not in {}", self.file, self.name);
        eprintln!("{line}");
        log::warn!("{line}");
    }

    /// Gives a request's WASI context the sockets the allow-list permits, instead of the pod's
    /// whole network that a command gets.
    pub(crate) fn restrict(&self, builder: &mut WasiCtxBuilder) {
        let open = !self.list.is_empty();
        builder
            .allow_tcp(open)
            .allow_udp(open)
            .allow_ip_name_lookup(open);
        let this = self.clone();
        builder.socket_addr_check(move |addr, how| -> Check {
            let this = this.clone();
            Box::pin(async move {
                let allowed = this.list.allows_socket(addr, how).await;
                // A datagram from elsewhere is dropped silently: whoever sends it is not the guest.
                if !allowed && !matches!(how, SocketAddrUse::UdpReceive) {
                    this.denied(&format!("socket {} {addr}", use_name(how)));
                }
                allowed
            })
        });
    }
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

/// `wasi:http`'s outbound requests go through here: one the list does not allow is denied
/// before it leaves; one allowed gets its CLIENT span and `traceparent` when requests are traced.
impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        if !self.list.allows_uri(request.uri()) {
            self.denied(&format!("outbound request to {}", request.uri()));
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let span = self.trace.as_ref().map(|t| {
            let port = request.uri().port_u16().unwrap_or_else(|| default_port(request.uri().scheme_str().unwrap_or("http")));
            t.start(&mut request, port)
        });
        Box::new(async move {
            use http_body_util::BodyExt;
            let sent = wasmtime_wasi_http::default_send_request(request, options).await;
            if let Some(span) = span {
                crate::serve::trace::client_ended(span, sent.as_ref().map(|(res, _)| res.status().as_u16()).map_err(|e| format!("{e:?}")));
            }
            let (res, io) = sent?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

fn use_name(how: SocketAddrUse) -> &'static str {
    match how {
        SocketAddrUse::TcpBind => "TCP bind to",
        SocketAddrUse::TcpListen => "TCP listen on",
        SocketAddrUse::TcpAccept => "TCP accept from",
        SocketAddrUse::TcpConnect => "TCP connect to",
        SocketAddrUse::UdpBind => "UDP bind to",
        SocketAddrUse::UdpSend => "UDP send to",
        SocketAddrUse::UdpReceive => "UDP receive from",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn allowed(o: &AllowList, uri: &str) -> bool {
        o.allows_uri(&uri.parse().unwrap())
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn socket(o: &AllowList, addr: &str, how: SocketAddrUse) -> bool {
        block_on(o.allows_socket(addr.parse().unwrap(), how))
    }

    #[test]
    fn urls_are_checked_against_the_entries() {
        let entries = ["http://127.0.0.1:4318".to_string()];
        assert!(allows_url(&entries, "http://127.0.0.1:4318/v1/traces"));
        assert!(!allows_url(&entries, "http://127.0.0.1:4319/v1/traces"));
        assert!(!allows_url(&entries, "http://10.0.0.1:4318/v1/traces"));
        assert!(!allows_url(&[], "http://127.0.0.1:4318/v1/traces"));
        assert!(!allows_url(&["not a rule at all".to_string()], "http://127.0.0.1:4318/"));
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let o = list(&[]);
        assert!(o.is_empty());
        assert!(!allowed(&o, "http://127.0.0.1:3500/v1.0/state"));
        assert!(!socket(&o, "127.0.0.1:3500", SocketAddrUse::TcpConnect));
        assert!(!socket(&o, "127.0.0.1:53", SocketAddrUse::UdpSend));
    }

    #[test]
    fn allow_list_entries() {
        let o = list(&["http://127.0.0.1:3500", "api.example.com", "https://secure.example.com/", "[::1]:80"]);
        assert!(allowed(&o, "http://127.0.0.1:3500/v1.0/invoke"));
        assert!(!allowed(&o, "http://127.0.0.1:3501/"));
        assert!(!allowed(&o, "https://127.0.0.1:3500/"));
        assert!(allowed(&o, "http://API.example.com:9999/x"));
        assert!(allowed(&o, "https://api.example.com/x"));
        assert!(allowed(&o, "https://secure.example.com/x"));
        assert!(!allowed(&o, "https://secure.example.com:8443/x"));
        assert!(!allowed(&o, "http://secure.example.com/x"));
        assert!(allowed(&o, "http://[::1]/"));
        assert!(!allowed(&o, "http://evil.com/?api.example.com"));
        assert!(allowed(&list(&["*"]), "https://anything.example/"));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(Rule::parse("ftp://x").is_err());
        assert!(Rule::parse("http://a b").is_err());
        let e = AllowList::parse(&["ok.example".into(), "ftp://x".into()]).unwrap_err();
        assert!(e.contains("ftp://x"), "{e}");
    }

    #[test]
    fn sockets_connect_only_where_an_ip_entry_allows() {
        use SocketAddrUse::*;
        let o = list(&["http://127.0.0.1:3500", "10.0.0.1", "https://10.0.0.2", "[fd00::1]:53"]);
        assert!(socket(&o, "127.0.0.1:3500", TcpConnect));
        assert!(!socket(&o, "127.0.0.1:3501", TcpConnect));
        assert!(!socket(&o, "127.0.0.2:3500", TcpConnect));
        // IPv4-mapped IPv6 is the same address.
        assert!(socket(&o, "[::ffff:127.0.0.1]:3500", TcpConnect));
        // No port, no scheme: any port; a scheme without a port: its default port.
        assert!(socket(&o, "10.0.0.1:5432", TcpConnect));
        assert!(socket(&o, "10.0.0.2:443", TcpConnect));
        assert!(!socket(&o, "10.0.0.2:80", TcpConnect));
        // UDP both ways to allowed peers only.
        assert!(socket(&o, "[fd00::1]:53", UdpSend));
        assert!(socket(&o, "[fd00::1]:53", UdpReceive));
        assert!(!socket(&o, "[fd00::2]:53", UdpReceive));
        assert!(!socket(&o, "8.8.8.8:53", UdpSend));
        let any = list(&["*"]);
        assert!(socket(&any, "203.0.113.9:25", TcpConnect));
        assert!(socket(&any, "203.0.113.9:53", UdpSend));
    }

    #[test]
    fn sockets_bind_only_implicitly_and_never_listen() {
        use SocketAddrUse::*;
        for o in [list(&["*"]), list(&["127.0.0.1"])] {
            // What connect and send check before the kernel picks a local port.
            assert!(socket(&o, "0.0.0.0:0", TcpBind));
            assert!(socket(&o, "[::]:0", UdpBind));
            assert!(!socket(&o, "0.0.0.0:8080", TcpBind));
            assert!(!socket(&o, "127.0.0.1:0", TcpBind));
            assert!(!socket(&o, "0.0.0.0:5353", UdpBind));
            assert!(!socket(&o, "0.0.0.0:0", TcpListen));
            assert!(!socket(&o, "127.0.0.1:40000", TcpAccept));
        }
    }

    #[test]
    fn name_entries_allow_what_the_name_resolves_to() {
        use SocketAddrUse::*;
        // `localhost` is in every /etc/hosts.
        let o = list(&["localhost:7000"]);
        assert!(socket(&o, "127.0.0.1:7000", TcpConnect));
        assert!(!socket(&o, "127.0.0.1:7001", TcpConnect));
        assert!(!socket(&o, "192.0.2.1:7000", TcpConnect));
        // The answer was remembered.
        assert!(o.remembered("localhost", "127.0.0.1".parse().unwrap(), Instant::now()));
        // A name that does not resolve allows nothing.
        let o = list(&["no-such-host.invalid"]);
        assert!(!socket(&o, "127.0.0.1:80", TcpConnect));
    }

    #[test]
    fn resolved_addresses_are_forgotten_after_the_ttl() {
        let o = list(&["db.example"]);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert!(o.remember("db.example", &[a], t0));
        // A later answer without `a` (round-robin) adds `b` and keeps `a` until its TTL.
        assert!(o.remember("db.example", &[b], t0 + Duration::from_secs(10)));
        let later = t0 + Duration::from_secs(20);
        assert!(o.remembered("db.example", a, later) && o.remembered("db.example", b, later));
        let much_later = t0 + NAME_TTL + Duration::from_secs(1);
        assert!(!o.remembered("db.example", a, much_later));
        assert!(o.remembered("db.example", b, much_later));
        assert!(!o.remembered("other.example", b, later));
        // Nothing found is not remembered as an answer.
        assert!(!o.remember("db.example", &[], much_later));
    }
}
