//! Fetching `x5u` certificates (RFC 8224 §6.2.1, ATIS-1000080 §6.3.2):
//! HTTPS only, no redirects, a size limit, one deadline for the whole
//! exchange, and no private, loopback or reserved addresses unless allowed
//! (tests; [`super::egress`]). Names are resolved asynchronously under
//! their own timeout, every address is checked and only allowed ones are
//! connected to. Through an egress proxy (`[stir] fetch_proxy`, often
//! required by operators), https URLs are tunnelled with HTTP CONNECT
//! (RFC 9110 §9.3.6) and http ones (CRLs) asked in absolute form; the proxy
//! resolves the names then, and a literal address is still checked here.
//!
//! A deliberately small HTTP/1.1 client: `GET` with `Connection: close`,
//! a status line, headers, and a body framed by Content-Length, chunked
//! encoding or the end of the connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

/// Fetch settings.
#[derive(Clone)]
pub struct FetchOptions {
    pub tls: Arc<rustls::ClientConfig>,
    /// Deadline for resolve + connect + handshake + response.
    pub timeout: Duration,
    pub max_bytes: usize,
    /// Allow private, loopback and link-local addresses (tests only).
    pub allow_private: bool,
    /// An HTTP proxy every fetch goes through (`None`: direct).
    pub proxy: Option<Proxy>,
}

/// An egress HTTP proxy, `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
}

impl Proxy {
    /// Parses `http://host:port` (a trailing `/` allowed).
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("must be an http:// URL (HTTP CONNECT is used for https fetches)")?;
        let (host, port, path) =
            split_rest(rest, 0).map_err(|_| "must be http://host:port".to_owned())?;
        if path != "/" || port == 0 {
            return Err("must be http://host:port, with the port and no path".to_owned());
        }
        Ok(Proxy { host, port })
    }
}

/// How long a name may take to resolve (within the fetch's deadline).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Name lookups in flight at once. The system resolver blocks a thread of
/// tokio's blocking pool per lookup, until it answers — also after the
/// fetch gave up — so a flood of x5u URLs naming slow or unanswered
/// domains would otherwise tie up the whole pool (and everything else that
/// uses it). Beyond this, a lookup fails at once as unresolvable.
const MAX_LOOKUPS: usize = 16;

/// The process's lookup permits.
fn lookups() -> &'static Arc<tokio::sync::Semaphore> {
    static LOOKUPS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    LOOKUPS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)))
}

/// Resolves `host` on the blocking pool under [`RESOLVE_TIMEOUT`], with a
/// permit of `permits` held until the resolver returns (not only until
/// the caller stops waiting).
async fn resolve(
    permits: &Arc<tokio::sync::Semaphore>,
    host: &str,
    port: u16,
) -> Result<Vec<std::net::SocketAddr>, FetchError> {
    let permit = permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| FetchError::Resolve)?;
    let name = host.to_owned();
    let lookup = tokio::task::spawn_blocking(move || {
        let _held = permit;
        std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port))
            .map(|addrs| addrs.collect::<Vec<_>>())
    });
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(Ok(addrs))) => Ok(addrs),
        _ => Err(FetchError::Resolve),
    }
}

/// Bytes of a proxy's answer to CONNECT read at most.
const MAX_PROXY_HEAD: usize = 8 * 1024;

/// A fetched certificate response.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Vec<u8>,
    /// `Cache-Control: max-age`, if given.
    pub max_age: Option<Duration>,
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("x5u is not an https URL")]
    NotHttps,
    #[error("bad x5u URL")]
    BadUrl,
    #[error("cannot resolve host")]
    Resolve,
    #[error("address {0} is private, loopback or reserved")]
    Private(IpAddr),
    #[error("proxy: {0}")]
    Proxy(String),
    #[error("timed out")]
    Timeout,
    #[error("connection: {0}")]
    Io(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP status {0} (redirects are not followed)")]
    Status(u16),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed HTTP response")]
    Malformed,
}

/// TLS client settings: the system's roots plus `extra_ca` PEM files.
pub fn tls_config(extra_ca: &[std::path::PathBuf]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    if let Ok(pem) = std::fs::read(&system) {
        for c in rustls_pemfile::certs(&mut &pem[..]).flatten() {
            let _ = roots.add(c);
        }
    }
    for f in extra_ca {
        let pem = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for c in rustls_pemfile::certs(&mut &pem[..]) {
            roots
                .add(c.map_err(|e| format!("{}: {e}", f.display()))?)
                .map_err(|e| format!("{}: {e}", f.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Splits `https://host[:port]/path` into (host, port, path).
fn split_url(url: &str) -> Result<(String, u16, String), FetchError> {
    let rest = url.strip_prefix("https://").ok_or(FetchError::NotHttps)?;
    split_rest(rest, 443)
}

/// Splits the part of a URL after `scheme://` (default port given).
fn split_rest(rest: &str, default_port: u16) -> Result<(String, u16, String), FetchError> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.contains('@')
        || path.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return Err(FetchError::BadUrl);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or(FetchError::BadUrl)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| FetchError::BadUrl)?,
            None if after.is_empty() => default_port,
            None => return Err(FetchError::BadUrl),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| FetchError::BadUrl)?),
            None => (authority.to_owned(), default_port),
        }
    };
    Ok((host, port, path.to_owned()))
}

/// Fetches the https `url` under `opts`.
pub async fn fetch(url: &str, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let (host, port, path) = split_url(url)?;
    tokio::time::timeout(opts.timeout, fetch_inner(host, port, path, true, opts))
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// Fetches an `http` or `https` URL: for signed documents such as CRLs,
/// whose integrity does not depend on the transport (RFC 5280 §5).
pub async fn fetch_any(url: &str, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let (host, port, path, tls) = match url.strip_prefix("http://") {
        Some(rest) => {
            let (h, p, path) = split_rest(rest, 80)?;
            (h, p, path, false)
        }
        None => {
            let (h, p, path) = split_url(url)?;
            (h, p, path, true)
        }
    };
    tokio::time::timeout(opts.timeout, fetch_inner(host, port, path, tls, opts))
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// `host:port` as written in a Host header or a CONNECT request (an IPv6
/// address in brackets).
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves `host` (under [`RESOLVE_TIMEOUT`]) and connects to the first
/// of its allowed addresses that answers ([`super::egress::allowed`]).
async fn connect(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<tokio::net::TcpStream, FetchError> {
    let resolved: Vec<std::net::SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![std::net::SocketAddr::new(ip, port)],
        Err(_) => resolve(lookups(), host, port).await?,
    };
    let allowed =
        super::egress::allowed(&resolved, allow_private).map_err(|first| match first {
            Some(ip) => FetchError::Private(ip),
            None => FetchError::Resolve,
        })?;
    let mut last = FetchError::Resolve;
    for addr in allowed {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = FetchError::Io(format!("{addr}: {e}")),
        }
    }
    Err(last)
}

/// Opens a tunnel to `host:port` through the proxy (HTTP CONNECT); the
/// proxy's answer must be 2xx.
async fn tunnel(
    mut tcp: tokio::net::TcpStream,
    host: &str,
    port: u16,
) -> Result<tokio::net::TcpStream, FetchError> {
    let target = authority(host, port);
    let req =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: callgate\r\n\r\n");
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|e| FetchError::Proxy(e.to_string()))?;
    // Read byte by byte up to the end of the head: nothing of the tunnel
    // (the TLS handshake) may be consumed here.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_HEAD {
            return Err(FetchError::Proxy("answer to CONNECT too long".into()));
        }
        match tcp.read(&mut byte).await {
            Ok(0) => return Err(FetchError::Proxy("closed before answering CONNECT".into())),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(FetchError::Proxy(e.to_string())),
        }
    }
    let status = std::str::from_utf8(&head)
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| FetchError::Proxy("malformed answer to CONNECT".into()))?;
    if !(200..300).contains(&status) {
        return Err(FetchError::Proxy(format!("CONNECT refused with {status}")));
    }
    Ok(tcp)
}

async fn fetch_inner(
    host: String,
    port: u16,
    path: String,
    use_tls: bool,
    opts: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let default_port = if use_tls { 443 } else { 80 };
    let host_header = if port == default_port {
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        }
    } else {
        authority(&host, port)
    };
    // Plain http through a proxy asks for the absolute URL (RFC 9112 §3.2.2).
    let target = match (&opts.proxy, use_tls) {
        (Some(_), false) => format!("http://{host_header}{path}"),
        _ => path,
    };
    let tcp = match &opts.proxy {
        Some(proxy) => {
            if let Ok(ip) = host.parse::<IpAddr>() {
                if !opts.allow_private && super::egress::is_refused(ip) {
                    return Err(FetchError::Private(ip));
                }
            }
            // The proxy is the operator's: any address it has is allowed.
            let tcp = connect(&proxy.host, proxy.port, true).await.map_err(|e| {
                FetchError::Proxy(format!("{}: {e}", authority(&proxy.host, proxy.port)))
            })?;
            if use_tls {
                tunnel(tcp, &host, port).await?
            } else {
                tcp
            }
        }
        None => connect(&host, port, opts.allow_private).await?,
    };
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/pem-certificate-chain, application/x-pem-file, application/pkix-crl, */*\r\nUser-Agent: callgate\r\nConnection: close\r\n\r\n");
    if !use_tls {
        return exchange(tcp, &req, opts.max_bytes).await;
    }
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Err(_) => {
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| FetchError::BadUrl)?
        }
    };
    let tls = TlsConnector::from(opts.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| FetchError::Tls(e.to_string()))?;
    exchange(tls, &req, opts.max_bytes).await
}

/// Writes the request and reads the whole response (the server closes).
async fn exchange<S>(mut stream: S, req: &str, max_bytes: usize) -> Result<Fetched, FetchError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| FetchError::Io(e.to_string()))?;
    let limit = max_bytes + 16 * 1024;
    let mut buf = Vec::with_capacity(8 * 1024);
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Servers often close without close_notify; what was read stands.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(FetchError::Io(e.to_string())),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > limit {
            return Err(FetchError::TooLarge(max_bytes));
        }
    }
    parse_response(&buf, max_bytes)
}

/// Parses a whole HTTP/1.1 response read until the connection closed.
pub(crate) fn parse_response(buf: &[u8], max_bytes: usize) -> Result<Fetched, FetchError> {
    let head_end = memchr::memmem::find(buf, b"\r\n\r\n").ok_or(FetchError::Malformed)?;
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| FetchError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(FetchError::Malformed)?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(FetchError::Malformed)?;
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    let (mut length, mut chunked, mut max_age) = (None, false, None);
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => {
                length = Some(value.parse::<usize>().map_err(|_| FetchError::Malformed)?)
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "cache-control" => {
                max_age = value
                    .split(',')
                    .find_map(|d| d.trim().strip_prefix("max-age="))
                    .and_then(|s| s.parse().ok())
                    .map(Duration::from_secs);
            }
            _ => {}
        }
    }
    let raw = &buf[head_end + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        let mut rest = raw;
        loop {
            let eol = memchr::memmem::find(rest, b"\r\n").ok_or(FetchError::Malformed)?;
            let size_txt = std::str::from_utf8(&rest[..eol]).map_err(|_| FetchError::Malformed)?;
            let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| FetchError::Malformed)?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            let data = rest.get(..size).ok_or(FetchError::Malformed)?;
            out.extend_from_slice(data);
            if out.len() > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            rest = rest.get(size + 2..).ok_or(FetchError::Malformed)?;
        }
        out
    } else {
        match length {
            Some(n) => raw.get(..n).ok_or(FetchError::Malformed)?.to_vec(),
            None => raw.to_vec(),
        }
    };
    if body.len() > max_bytes {
        return Err(FetchError::TooLarge(max_bytes));
    }
    Ok(Fetched { body, max_age })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("https://cert.example.org/a/b.pem"),
            Ok(("cert.example.org".into(), 443, "/a/b.pem".into()))
        );
        assert_eq!(
            split_url("https://127.0.0.1:8443/x"),
            Ok(("127.0.0.1".into(), 8443, "/x".into()))
        );
        assert_eq!(
            split_url("https://[::1]:8443/x"),
            Ok(("::1".into(), 8443, "/x".into()))
        );
        assert_eq!(
            split_url("http://cert.example.org/x"),
            Err(FetchError::NotHttps)
        );
        assert_eq!(split_url("https://user@host/x"), Err(FetchError::BadUrl));
    }

    #[test]
    fn responses() {
        let ok = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nCache-Control: public, max-age=600\r\n\r\nabcEXTRA", 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (ok.body.as_slice(), ok.max_age),
            (&b"abc"[..], Some(Duration::from_secs(600)))
        );
        let chunked = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(chunked.body, b"abcde");
        assert_eq!(
            parse_response(b"HTTP/1.1 302 Found\r\nLocation: x\r\n\r\n", 100).err(),
            Some(FetchError::Status(302))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n0123456789", 5).err(),
            Some(FetchError::TooLarge(5))
        );
        assert!(parse_response(b"garbage", 5).is_err());
    }

    #[test]
    fn lookups_beyond_the_permits_fail_at_once_and_a_permit_is_held_until_the_resolver_returns() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let none = Arc::new(tokio::sync::Semaphore::new(0));
            assert_eq!(
                resolve(&none, "localhost", 443).await,
                Err(FetchError::Resolve)
            );
            let one = Arc::new(tokio::sync::Semaphore::new(1));
            let found = resolve(&one, "localhost", 443)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(found
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 443));
            // The permit came back with the answer.
            assert_eq!(one.available_permits(), 1);
        });
    }

    #[test]
    fn proxies() {
        assert_eq!(
            Proxy::parse("http://proxy.example:3128"),
            Ok(Proxy {
                host: "proxy.example".into(),
                port: 3128
            })
        );
        assert_eq!(
            Proxy::parse("http://[::1]:8080/").map(|p| p.host),
            Ok("::1".to_owned())
        );
        for bad in [
            "https://p:1",
            "http://p",
            "http://p:1/x",
            "p:1",
            "http://u@p:1",
        ] {
            assert!(Proxy::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(authority("::1", 443), "[::1]:443");
    }
}
