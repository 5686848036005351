//! A carrier (or an attacker on the trunk) speaking raw SIP to callgate over
//! UDP, TCP or TLS, and a PBX stand-in on a UDP socket that records what
//! reaches it. Every read is bounded; nothing sleeps.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls;

use super::{repo, Callgate, LOOPBACK};

/// The transports a carrier can use towards callgate's trunk side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Udp,
    Tcp,
    Tls,
}

pub const WIRES: [Wire; 3] = [Wire::Udp, Wire::Tcp, Wire::Tls];

impl Wire {
    /// The Via transport token.
    pub fn token(self) -> &'static str {
        match self {
            Wire::Udp => "UDP",
            Wire::Tcp => "TCP",
            Wire::Tls => "TLS",
        }
    }
}

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// One carrier connection to callgate's trunk side.
pub struct Carrier {
    conn: Conn,
    pub wire: Wire,
    pub port: u16,
    /// Bytes read but not yet returned (streams).
    pending: String,
}

const READ: Duration = Duration::from_secs(5);

/// A TLS client connection to callgate's demo certificate (trusting the
/// demo CA, the name 127.0.0.1): one place for every TLS test peer.
pub fn demo_tls_client() -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(repo().join("sip-config/tls/callgate-demo-ca.crt")).expect("ca");
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    rustls::ClientConnection::new(Arc::new(cfg), name).expect("client")
}

fn tls_client(port: u16) -> Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect((LOOPBACK, port)).expect("connect TLS");
    tcp.set_read_timeout(Some(READ)).ok();
    Box::new(rustls::StreamOwned::new(demo_tls_client(), tcp))
}

impl Carrier {
    pub fn connect(cg: &Callgate, wire: Wire) -> Carrier {
        let trunk: SocketAddr = format!("{LOOPBACK}:{}", cg.ports.trunk)
            .parse()
            .expect("addr");
        let (conn, port) = match wire {
            Wire::Udp => {
                let s = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
                s.set_read_timeout(Some(READ)).ok();
                let port = s.local_addr().expect("addr").port();
                (Conn::Udp(s, trunk), port)
            }
            Wire::Tcp => {
                let s = TcpStream::connect(trunk).expect("connect TCP");
                s.set_read_timeout(Some(READ)).ok();
                let port = s.local_addr().expect("addr").port();
                (Conn::Tcp(s), port)
            }
            Wire::Tls => {
                let s = tls_client(cg.ports.trunk_tls);
                let port = s.sock.local_addr().expect("addr").port();
                (Conn::Tls(s), port)
            }
        };
        Carrier {
            conn,
            wire,
            port,
            pending: String::new(),
        }
    }

    pub fn send(&mut self, msg: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s, to) => {
                s.send_to(msg, *to).expect("send");
            }
            Conn::Tcp(s) => s.write_all(msg).expect("send TCP"),
            Conn::Tls(s) => s.write_all(msg).expect("send TLS"),
        }
    }

    /// Ends a stream connection from this side and waits (bounded) until
    /// callgate has closed it too: everything sent on it has then been
    /// through callgate, even a message whose Content-Length would have
    /// swallowed what followed it. A no-op for UDP.
    pub fn finish(&mut self) {
        match &mut self.conn {
            Conn::Udp(..) => return,
            Conn::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            Conn::Tls(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
                let _ = s.sock.shutdown(std::net::Shutdown::Write);
            }
        }
        let deadline = Instant::now() + READ;
        while Instant::now() < deadline {
            if self.read_some().is_none() {
                return;
            }
        }
        panic!("{:?}: callgate kept the connection open", self.wire);
    }

    fn read_some(&mut self) -> Option<String> {
        let mut buf = vec![0u8; 65_535];
        let n = match &mut self.conn {
            Conn::Udp(s, _) => s.recv_from(&mut buf).ok()?.0,
            Conn::Tcp(s) => s.read(&mut buf).ok()?,
            Conn::Tls(s) => s.read(&mut buf).ok()?,
        };
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next response whose status line starts with `SIP/2.0 <status>`
    /// and that carries `Call-ID: <call_id>`; others are skipped. Panics
    /// after 5 s without one.
    pub fn response(&mut self, status: u16, call_id: &str) -> String {
        let deadline = Instant::now() + READ;
        let want = format!("SIP/2.0 {status} ");
        let id = format!("Call-ID: {call_id}\r\n");
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            for m in self.take_messages() {
                if m.starts_with(&want) && m.contains(&id) {
                    return m;
                }
                seen.push(m.lines().next().unwrap_or_default().to_owned());
            }
            match self.read_some() {
                Some(s) => self.pending.push_str(&s),
                None => break,
            }
        }
        panic!(
            "{:?}: no {status} for {call_id}; saw {seen:?} and {:?}",
            self.wire, self.pending
        );
    }

    /// Whole messages out of the bytes read so far (framed by the blank
    /// line and Content-Length).
    fn take_messages(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let p = self.pending.trim_start_matches(['\r', '\n']).to_owned();
            let Some(end) = p.find("\r\n\r\n") else {
                self.pending = p;
                return out;
            };
            let len = p[..end]
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l"))
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if p.len() < end + 4 + len {
                self.pending = p;
                return out;
            }
            out.push(p[..end + 4 + len].to_owned());
            self.pending = p[end + 4 + len..].to_owned();
        }
    }
}

/// The PBX stand-in: a UDP socket that is callgate's PBX target.
pub struct Pbx {
    pub sock: UdpSocket,
}

impl Pbx {
    pub fn bind() -> Pbx {
        let sock = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
        sock.set_read_timeout(Some(READ)).ok();
        Pbx { sock }
    }

    pub fn port(&self) -> u16 {
        self.sock.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Everything that reaches the PBX until a request with Call-ID
    /// `sentinel` (which is included last). INVITEs are answered 200 OK,
    /// other requests 200 OK too, so no transaction is left retransmitting.
    pub fn until(&self, sentinel: &str) -> Vec<String> {
        let id = format!("Call-ID: {sentinel}\r\n");
        let mut got = Vec::new();
        let deadline = Instant::now() + READ;
        let mut buf = vec![0u8; 65_535];
        while Instant::now() < deadline {
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                break;
            };
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !m.starts_with("SIP/2.0") && !m.starts_with("ACK ") {
                // Its Contact names this socket, so the dialog's next hop
                // is the PBX stand-in itself.
                let ok = answer(&m, "200 OK").replace(
                    "Contact: <sip:agent@127.0.0.1>",
                    &format!("Contact: <sip:agent@127.0.0.1:{}>", self.port()),
                );
                let _ = self.sock.send_to(ok.as_bytes(), from);
            }
            let done = m.contains(&id);
            got.push(m);
            if done {
                return got;
            }
        }
        panic!("the sentinel {sentinel} never reached the PBX; got {got:#?}");
    }
}

/// A TLS PBX stand-in on `listener`: accepts one connection with
/// `server`, reads one request head (bounded), answers it 200 OK and
/// holds the connection until callgate has read the answer. Returns the
/// request and the name the client sent as SNI.
pub fn tls_pbx_once(
    listener: std::net::TcpListener,
    server: rustls::ServerConfig,
) -> std::thread::JoinHandle<(String, Option<String>)> {
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let conn = rustls::ServerConnection::new(Arc::new(server)).expect("conn");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut got = String::new();
        let mut buf = [0u8; 4096];
        while !got.contains("\r\n\r\n") {
            let n = tls.read(&mut buf).expect("read");
            assert!(n > 0, "closed before a whole request: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let sni = tls.conn.server_name().map(str::to_owned);
        tls.write_all(answer(&got, "200 OK").as_bytes())
            .expect("answer");
        tls.flush().ok();
        // Keep the connection until callgate has read the answer.
        let _ = tls.read(&mut buf);
        (got, sni)
    })
}

/// A response to `req`, as a UA would form it: its Via, From, Call-ID,
/// CSeq and Record-Route copied, a To tag added.
pub fn answer(req: &str, status: &str) -> String {
    let mut r = format!("SIP/2.0 {status}\r\n");
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let l = line.to_ascii_lowercase();
        if [
            "via:",
            "v:",
            "from:",
            "f:",
            "call-id:",
            "i:",
            "cseq:",
            "record-route:",
        ]
        .iter()
        .any(|p| l.starts_with(p))
        {
            r.push_str(line);
            r.push_str("\r\n");
        } else if l.starts_with("to:") || l.starts_with("t:") {
            r.push_str(line);
            if !l.contains("tag=") {
                r.push_str(";tag=pbx");
            }
            r.push_str("\r\n");
        }
    }
    r.push_str(&format!(
        "Contact: <sip:agent@{LOOPBACK}>\r\nContent-Length: 0\r\n\r\n"
    ));
    r
}

/// An OPTIONS that marks the end of a test step: once the PBX has it,
/// everything the carrier sent before it on the same connection has been
/// through callgate (one connection's messages are processed in order).
pub fn sentinel(c: &Carrier, call_id: &str) -> String {
    format!(
        "OPTIONS sip:+15550100@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/{t} {LOOPBACK}:{p};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\nFrom: <sip:carrier@{LOOPBACK}>;tag=s\r\nTo: <sip:+15550100@{LOOPBACK}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        t = c.wire.token(),
        p = c.port,
    )
}

/// callgate with the call phases on, forwarding the trunk's calls to
/// `pbx`: verification against the test PKI (no call here is signed, so
/// each is marked `No-TN-Validation`) and a policy, version `version`,
/// that tags every unsigned call; `extra` adds sections.
pub fn pipeline_callgate(pki: &super::pki::Pki, pbx: &Pbx, version: &str, extra: &str) -> Callgate {
    let policy = pki._dir.path().join(format!("policy-{version}.toml"));
    std::fs::write(
        &policy,
        format!(
            "version = \"{version}\"\n[levels]\nmedium = 30\nhigh = 60\ncritical = 90\n[[rule]]\ncode = \"UNSIGNED\"\nweight = 10\nwhen = {{ stir = \"none\" }}\n"
        ),
    )
    .expect("policy");
    let ports = super::Ports::new();
    let cfg = super::config(
        ports,
        &[format!("sip:127.0.0.1:{}", pbx.port())],
        &["sip:127.0.0.1:9".to_owned()],
        &format!(
            "[stir]\nenabled = true\ntrust_dir = \"{}\"\n\n[risk]\npolicy = \"{}\"\n\n{extra}",
            pki.trust_dir.display(),
            policy.display(),
        ),
    );
    Callgate::start(ports, &cfg)
}
