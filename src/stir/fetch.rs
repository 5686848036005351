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
//! HTTP/1.1 (RFC 9112) is spoken by hyper's client connection, TLS by
//! tokio-rustls, and the TCP connection is made by hyper-util's
//! `HttpConnector` through [`EgressResolver`]: the name is resolved here
//! and only the allowed addresses go to the connector, which tries each in
//! turn (happy eyeballs between IPv6 and IPv4, RFC 8305 §5) with the
//! deadline divided among them, so one silent address cannot use up the
//! whole deadline. One connection per fetch (`Connection: close`): no
//! connection is kept for reuse, since certificates are cached for hours
//! and each signer's host is fetched from rarely (docs/decisions/0008).
//!
//! The same client stack POSTs the decision events to the operator's
//! webhooks ([`post`], `crate::events`): http or https, direct, any
//! address, the answer's status returned.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;
use tower_service::Service;

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

/// Splits an `http://` or `https://` URL into (host, port, path, TLS).
fn split_any_url(url: &str) -> Result<(String, u16, String, bool), FetchError> {
    match url.strip_prefix("http://") {
        Some(rest) => {
            let (h, p, path) = split_rest(rest, 80)?;
            Ok((h, p, path, false))
        }
        None => {
            let (h, p, path) = split_url(url)?;
            Ok((h, p, path, true))
        }
    }
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
    let (host, port, path, tls) = split_any_url(url)?;
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

/// Bytes of a response head (status line and headers) read at most, from
/// the x5u server or from the proxy answering CONNECT (hyper's smallest
/// read buffer).
const MAX_HEAD: usize = 8 * 1024;

/// How long the connection to the IPv6 (first-resolved family) addresses
/// is given before the other family is tried beside it (RFC 8305 §5).
const HAPPY_EYEBALLS: Duration = Duration::from_millis(250);

/// The resolver under hyper-util's connector: [`resolve`] (bounded
/// lookups) then [`super::egress::allowed`], so that only allowed
/// addresses reach the connector — a name with a private and a public
/// address can only be connected to at the public one.
#[derive(Clone)]
struct EgressResolver {
    allow_private: bool,
}

impl Service<Name> for EgressResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = FetchError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, FetchError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let resolved = resolve(lookups(), name.as_str(), 0).await?;
            super::egress::allowed(&resolved, allow_private)
                .map(Vec::into_iter)
                .map_err(|first| match first {
                    Some(ip) => FetchError::Private(ip),
                    None => FetchError::Resolve,
                })
        })
    }
}

/// The error a failed connection attempt is: ours if the resolver gave
/// it ([`FetchError::Private`], [`FetchError::Resolve`]), else the
/// connector's chain of causes.
fn connect_error(e: &(dyn std::error::Error + 'static)) -> FetchError {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(ours) = c.downcast_ref::<FetchError>() {
            return ours.clone();
        }
        cause = c.source();
    }
    FetchError::Io(causes(e))
}

/// An error with its causes, `a: b: c`.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Connects to `host:port` (a name resolved by [`EgressResolver`], a
/// literal address checked here), trying each allowed address in turn
/// within `timeout`.
async fn connect(
    host: &str,
    port: u16,
    allow_private: bool,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, FetchError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        // A literal is not resolved: the connector goes straight to it.
        if !allow_private && super::egress::is_refused(ip) {
            return Err(FetchError::Private(ip));
        }
    }
    connect_with(EgressResolver { allow_private }, host, port, timeout).await
}

/// Connects to `host:port`, its addresses given by `resolver`: each in
/// turn (the other family alongside after [`HAPPY_EYEBALLS`]), each given
/// its share of `timeout`.
async fn connect_with<R>(
    resolver: R,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, FetchError>
where
    R: Service<Name, Response = std::vec::IntoIter<SocketAddr>, Error = FetchError>
        + Clone
        + Send
        + Sync
        + 'static,
    R::Future: Send,
{
    let mut connector = HttpConnector::new_with_resolver(resolver);
    connector.enforce_http(false);
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    connector.set_happy_eyeballs_timeout(Some(HAPPY_EYEBALLS));
    let uri: hyper::Uri = format!("tcp://{}/", authority(host, port))
        .parse()
        .map_err(|_| FetchError::BadUrl)?;
    connector
        .call(uri)
        .await
        .map(TokioIo::into_inner)
        .map_err(|e| connect_error(&e))
}

/// Runs `work` (a request and its response) while driving its
/// connection `conn` in the same task, and returns when `work` is done:
/// no task is spawned, so nothing of a fetch outlives it (its deadline
/// included), and no byte crosses to another worker thread.
async fn drive<C, T>(conn: C, work: impl Future<Output = T>) -> T
where
    C: Future,
{
    tokio::pin!(conn);
    tokio::pin!(work);
    let mut conn_live = true;
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = &mut conn, if conn_live => conn_live = false,
        }
    }
}

/// What a hyper error means for the fetch: a response that does not
/// parse as HTTP is malformed (the server's fault, 436); anything else
/// (reset, closed early) leaves the certificate unavailable.
fn http_error(e: &hyper::Error) -> FetchError {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        FetchError::Malformed
    } else {
        FetchError::Io(causes(e))
    }
}

/// Opens a tunnel to `host:port` through the proxy's connection `tcp`:
/// HTTP CONNECT (RFC 9110 §9.3.6), a 2xx answer, then the connection is
/// the tunnel (hyper's upgrade keeps any byte read past the answer).
async fn tunnel(
    tcp: tokio::net::TcpStream,
    host: &str,
    port: u16,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, FetchError> {
    let proxy_error = |e: hyper::Error| FetchError::Proxy(causes(&e));
    let target = authority(host, port);
    let (mut sender, conn) = http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .map_err(proxy_error)?;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(&target)
        .header(HOST, &target)
        .header(USER_AGENT, "callgate")
        .body(Empty::new())
        .map_err(|_| FetchError::BadUrl)?;
    let upgraded = drive(conn.with_upgrades(), async {
        let answer = sender.send_request(req).await.map_err(proxy_error)?;
        if !answer.status().is_success() {
            return Err(FetchError::Proxy(format!(
                "CONNECT refused with {}",
                answer.status().as_u16()
            )));
        }
        hyper::upgrade::on(answer).await.map_err(proxy_error)
    })
    .await?;
    Ok(TokioIo::new(upgraded))
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
    let Some(proxy) = &opts.proxy else {
        let tcp = connect(&host, port, opts.allow_private, opts.timeout).await?;
        return if use_tls {
            let tls = handshake(tcp, &host, opts).await?;
            exchange(tls, &target, &host_header, opts.max_bytes).await
        } else {
            exchange(tcp, &target, &host_header, opts.max_bytes).await
        };
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !opts.allow_private && super::egress::is_refused(ip) {
            return Err(FetchError::Private(ip));
        }
    }
    // The proxy is the operator's: any address it has is allowed.
    let tcp = connect(&proxy.host, proxy.port, true, opts.timeout)
        .await
        .map_err(|e| FetchError::Proxy(format!("{}: {e}", authority(&proxy.host, proxy.port))))?;
    if use_tls {
        let tunnelled = tunnel(tcp, &host, port).await?;
        let tls = handshake(tunnelled, &host, opts).await?;
        exchange(tls, &target, &host_header, opts.max_bytes).await
    } else {
        exchange(tcp, &target, &host_header, opts.max_bytes).await
    }
}

/// The TLS handshake with `host` (its name, or its address, checked
/// against the server's certificate) over `io`.
async fn handshake<S>(
    io: S,
    host: &str,
    opts: &FetchOptions,
) -> Result<CloseNotifyOptional<tokio_rustls::client::TlsStream<S>>, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| FetchError::BadUrl)?,
    };
    TlsConnector::from(opts.tls.clone())
        .connect(name, io)
        .await
        .map(CloseNotifyOptional)
        .map_err(|e| FetchError::Tls(e.to_string()))
}

/// A TLS stream whose end without close_notify is an end, not an error:
/// many servers close that way, and a body framed by the connection's
/// end is then whole (a truncated certificate still fails to parse).
struct CloseNotifyOptional<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for CloseNotifyOptional<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CloseNotifyOptional<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Sends `GET target` for `host` over `io` (with `Connection: close`:
/// one request per connection) and reads the response: status 200 only
/// (no redirect is followed), at most [`MAX_HEAD`] bytes of head, a body of at
/// most `max_bytes` — refused at once when its Content-Length says more,
/// counted while it is read otherwise (chunked, or to the connection's
/// end).
pub(crate) async fn exchange<S>(
    io: S,
    target: &str,
    host: &str,
    max_bytes: usize,
) -> Result<Fetched, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = Request::get(target)
        .header(HOST, host)
        .header(
            ACCEPT,
            "application/pem-certificate-chain, application/x-pem-file, application/pkix-crl, */*",
        )
        .header(USER_AGENT, "callgate")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::BadUrl)?;
    send(io, req, |response| async move {
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let headers = response.headers();
        let max_age = headers
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|d| d.trim().strip_prefix("max-age="))
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs);
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes as u64) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let body = Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    FetchError::TooLarge(max_bytes)
                } else if let Some(h) = e.downcast_ref::<hyper::Error>() {
                    http_error(h)
                } else {
                    FetchError::Io(causes(&*e))
                }
            })?
            .to_bytes();
        Ok(Fetched {
            body: body.to_vec(),
            max_age,
        })
    })
    .await
}

/// A `POST` of `body` (`content_type`, with `headers`) to an `http` or
/// `https` URL the operator configured (an events webhook): direct, no
/// proxy, any address allowed (the receiver is the operator's own), one
/// connection per request, one deadline (`opts.timeout`) for the whole
/// exchange. The answer's status (any; no redirect followed); its body is
/// read up to `opts.max_bytes` and dropped.
pub async fn post(
    url: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: Bytes,
    opts: &FetchOptions,
) -> Result<u16, FetchError> {
    let (host, port, path, tls) = split_any_url(url)?;
    let work = async {
        let tcp = connect(&host, port, true, opts.timeout).await?;
        let host_header = authority(&host, port);
        let mut req = Request::post(path.as_str())
            .header(HOST, host_header)
            .header(USER_AGENT, "callgate")
            .header(CONNECTION, "close")
            .header(hyper::header::CONTENT_TYPE, content_type);
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let req = req
            .body(http_body_util::Full::new(body))
            .map_err(|_| FetchError::BadUrl)?;
        if tls {
            let io = handshake(tcp, &host, opts).await?;
            send(io, req, |r| drop_answer(r, opts.max_bytes)).await
        } else {
            send(tcp, req, |r| drop_answer(r, opts.max_bytes)).await
        }
    };
    tokio::time::timeout(opts.timeout, work)
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// Sends `req` over `io` (hyper's HTTP/1.1 client connection, at most
/// [`MAX_HEAD`] bytes of response head) and hands the response to
/// `answer`, driving the connection in the same task ([`drive`]).
async fn send<S, B, T, F, Fut>(io: S, req: Request<B>, answer: F) -> Result<T, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: hyper::body::Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnOnce(hyper::Response<hyper::body::Incoming>) -> Fut,
    Fut: Future<Output = Result<T, FetchError>>,
{
    let (mut sender, conn) = http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| http_error(&e))?;
    drive(conn, async {
        let response = sender.send_request(req).await.map_err(|e| http_error(&e))?;
        answer(response).await
    })
    .await
}

/// An answer whose body is not used: its status, the body read (up to
/// `max_bytes`) so that the exchange ends cleanly, and dropped.
async fn drop_answer(
    response: hyper::Response<hyper::body::Incoming>,
    max_bytes: usize,
) -> Result<u16, FetchError> {
    let status = response.status().as_u16();
    let _ = Limited::new(response.into_body(), max_bytes)
        .collect()
        .await;
    Ok(status)
}

/// The response `raw` (then the connection's end) read as the answer to
/// an x5u `GET`, with a body limit of `max_bytes`: [`exchange`] over an
/// in-memory stream, for the fuzz target and the tests.
pub(crate) fn read_response(raw: &[u8], max_bytes: usize) -> Result<Fetched, FetchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FetchError::Io(e.to_string()))?;
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(16 * 1024);
        let raw = raw.to_vec();
        let serve = tokio::spawn(async move {
            // Answer once the request's head is in, as a server does: a
            // client takes bytes before its request for a broken stream.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match server.read(&mut buf).await {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let _ = server.write_all(&raw).await;
            let _ = server.shutdown().await;
        });
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            exchange(client, "/x5u.pem", "x5u.example", max_bytes),
        )
        .await
        .map_err(|_| FetchError::Timeout)?;
        serve.abort();
        got
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

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
        let read = read_response;
        let ok = read(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nCache-Control: public, max-age=600\r\n\r\nabcEXTRA", 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (ok.body.as_slice(), ok.max_age),
            (&b"abc"[..], Some(Duration::from_secs(600)))
        );
        let chunked = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(chunked.body, b"abcde");
        let to_the_end = read(b"HTTP/1.1 200 OK\r\n\r\nabc", 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(to_the_end.body, b"abc");
        assert_eq!(
            read(b"HTTP/1.1 302 Found\r\nLocation: x\r\n\r\n", 100).err(),
            Some(FetchError::Status(302))
        );
        // Over the limit: by Content-Length before reading, or counted
        // while reading (to the end, or chunked).
        assert_eq!(
            read(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
                5
            )
            .err(),
            Some(FetchError::TooLarge(5))
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\n\r\n0123456789", 5).err(),
            Some(FetchError::TooLarge(5))
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n", 5).err(),
            Some(FetchError::TooLarge(5))
        );
        assert_eq!(
            read(b"garbage\r\n\r\n", 5).err(),
            Some(FetchError::Malformed)
        );
        // A head past the limit is malformed, not read on and on.
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..2000 {
            long.extend_from_slice(format!("X-Filler-{i}: yes\r\n").as_bytes());
        }
        long.extend_from_slice(b"\r\n");
        assert_eq!(read(&long, 100).err(), Some(FetchError::Malformed));
        // Closed before a whole answer: unavailable, not bad content.
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\nContent-Le", 100),
            Err(FetchError::Io(_))
        ));
    }

    #[test]
    fn lookups_beyond_the_permits_fail_at_once_and_a_permit_is_held_until_the_resolver_returns() {
        let rt = runtime();
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

    /// A resolver with fixed answers, for [`connect_with`].
    #[derive(Clone)]
    struct Fixed(Vec<SocketAddr>);

    impl Service<Name> for Fixed {
        type Response = std::vec::IntoIter<SocketAddr>;
        type Error = FetchError;
        type Future = std::future::Ready<Result<Self::Response, FetchError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Name) -> Self::Future {
            std::future::ready(Ok(self.0.clone().into_iter()))
        }
    }

    /// A name whose first address never answers (a listener whose accept
    /// queue is full: the kernel drops further SYNs) is still fetched from
    /// at its second address within the deadline: each address gets its
    /// share of it, where one connect per address in turn would spend the
    /// whole deadline on the first.
    #[test]
    fn a_silent_first_address_leaves_time_for_the_next() {
        let silent = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap_or_else(|e| panic!("{e}"));
        silent
            .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .unwrap_or_else(|e| panic!("{e}"));
        silent.listen(0).unwrap_or_else(|e| panic!("{e}"));
        let port = silent
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .unwrap_or_else(|| panic!("no port"));
        let first = SocketAddr::from(([127, 0, 0, 2], port));
        // Fill the accept queue (backlog 0 holds one).
        let queued: Vec<_> = (0..2)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&first, Duration::from_millis(200)).ok()
            })
            .collect();
        assert!(
            std::net::TcpStream::connect_timeout(&first, Duration::from_millis(200)).is_err(),
            "the first address must be silent for this test to mean anything"
        );
        let second = SocketAddr::from(([127, 0, 0, 3], port));
        let good = std::net::TcpListener::bind(second).unwrap_or_else(|e| panic!("{e}"));
        let rt = runtime();
        let deadline = Duration::from_secs(2);
        let got = rt.block_on(async {
            tokio::time::timeout(
                deadline,
                connect_with(Fixed(vec![first, second]), "x5u.example", port, deadline),
            )
            .await
        });
        let tcp = got
            .unwrap_or_else(|_| panic!("the deadline passed on the silent address"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tcp.peer_addr().ok(), Some(second));
        drop((queued, good));
    }

    /// A name is checked address by address before the connector sees
    /// any: `localhost` resolves to loopback only, so nothing is connected
    /// to and the refusal names the address (through hyper-util's error).
    #[test]
    fn a_name_resolving_only_to_refused_addresses_is_not_connected_to() {
        let rt = runtime();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let refused = rt.block_on(connect("localhost", port, false, Duration::from_secs(1)));
        assert!(
            matches!(refused, Err(FetchError::Private(ip)) if ip.is_loopback()),
            "{refused:?}"
        );
        let allowed = rt.block_on(connect("localhost", port, true, Duration::from_secs(1)));
        assert!(allowed.is_ok(), "{allowed:?}");
    }

    /// An http URL (a CRL) through the proxy is asked in absolute form
    /// (RFC 9112 §3.2.2), and its name is the proxy's to resolve.
    #[test]
    fn an_http_url_through_the_proxy_is_asked_in_absolute_form() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let proxy = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().ok()?;
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).ok()?;
                head.push(byte[0]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
                .ok()?;
            String::from_utf8(head).ok()
        });
        let opts = FetchOptions {
            tls: tls_config(&[]).unwrap_or_else(|e| panic!("{e}")),
            timeout: Duration::from_secs(5),
            max_bytes: 1024,
            allow_private: false,
            proxy: Some(Proxy {
                host: "127.0.0.1".to_owned(),
                port,
            }),
        };
        let rt = runtime();
        let got = rt
            .block_on(fetch_any("http://crl.invalid/ca.crl", &opts))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.body, b"abc");
        let head = proxy.join().ok().flatten().unwrap_or_default();
        assert!(
            head.starts_with("GET http://crl.invalid/ca.crl HTTP/1.1\r\n")
                && head
                    .to_ascii_lowercase()
                    .contains("\r\nhost: crl.invalid\r\n"),
            "{head}"
        );
    }
}
