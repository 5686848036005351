//! A small Redis client: one connection, pipelined (requests are written as
//! they come and replies matched in order), reconnected in the background
//! with capped backoff. While it is down, calls fail at once instead of
//! waiting, so callers fall back to local state without delay.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use super::resp::{self, Reply};

/// Why a Redis call did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    #[error("redis is down")]
    Down,
    #[error("redis connection lost")]
    Lost,
    #[error("redis error reply: {0}")]
    Reply(String),
}

/// Where and how to connect: `redis://[:password@]host:port[/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAddr {
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub db: u32,
}

/// The password never reaches a log or an error message.
impl std::fmt::Debug for RedisAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAddr")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

impl RedisAddr {
    pub fn parse(url: &str) -> Result<RedisAddr, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("must start with redis://")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, d)) if !d.is_empty() => {
                (h, d.parse().map_err(|_| "database must be a number")?)
            }
            Some((h, _)) => (h, 0),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse().map_err(|_| "port must be a number")?)
            }
            _ => (hostport, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("host missing".into());
        }
        Ok(RedisAddr {
            host: host.to_owned(),
            port,
            password: auth
                .map(|a| a.strip_prefix(':').unwrap_or(a).to_owned())
                .filter(|p| !p.is_empty()),
            db,
        })
    }
}

struct Request {
    cmd: Vec<u8>,
    reply: oneshot::Sender<Result<Reply, RedisError>>,
}

/// A Redis connection shared by every task.
pub struct Redis {
    tx: mpsc::Sender<Request>,
    up: Arc<AtomicBool>,
    reset: Arc<Notify>,
    pub reconnects: Arc<AtomicU64>,
}

impl Redis {
    /// Starts the connection task (inside a tokio runtime).
    pub fn start(addr: RedisAddr) -> Redis {
        let (tx, rx) = mpsc::channel(4096);
        let up = Arc::new(AtomicBool::new(false));
        let reset = Arc::new(Notify::new());
        let reconnects = Arc::new(AtomicU64::new(0));
        tokio::spawn(connection(
            addr,
            rx,
            up.clone(),
            reset.clone(),
            reconnects.clone(),
        ));
        Redis {
            tx,
            up,
            reset,
            reconnects,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Drops the connection (e.g. after a timeout: the server may hang)
    /// and reconnects; calls fail fast until it is back.
    pub fn reset(&self) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.reset.notify_one();
        }
    }

    /// Sends a command; fails at once while the connection is down.
    pub async fn call(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let mut replies = self.pipeline(&[args]).await?;
        replies.pop().ok_or(RedisError::Lost)
    }

    /// Sends several commands back to back on the connection (one round
    /// trip) and returns their replies in order; fails at once while the
    /// connection is down, and with the first error reply.
    pub async fn pipeline(&self, commands: &[&[&[u8]]]) -> Result<Vec<Reply>, RedisError> {
        if !self.is_up() {
            return Err(RedisError::Down);
        }
        let mut waiting = Vec::with_capacity(commands.len());
        for args in commands {
            let mut cmd = Vec::with_capacity(64);
            resp::command(&mut cmd, args);
            let (reply, rx) = oneshot::channel();
            self.tx
                .try_send(Request { cmd, reply })
                .map_err(|_| RedisError::Down)?;
            waiting.push(rx);
        }
        let mut replies = Vec::with_capacity(waiting.len());
        for rx in waiting {
            match rx.await {
                Ok(Ok(Reply::Error(e))) => return Err(RedisError::Reply(e)),
                Ok(Ok(r)) => replies.push(r),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(RedisError::Lost),
            }
        }
        Ok(replies)
    }
}

/// Connects, authenticates, selects the database and checks with PING.
async fn open(addr: &RedisAddr) -> Result<TcpStream, String> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(1),
        TcpStream::connect((addr.host.as_str(), addr.port)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let mut hello = Vec::new();
    if let Some(p) = &addr.password {
        resp::command(&mut hello, &[b"AUTH", p.as_bytes()]);
    }
    if addr.db != 0 {
        resp::command(&mut hello, &[b"SELECT", addr.db.to_string().as_bytes()]);
    }
    resp::command(&mut hello, &[b"PING"]);
    let expected = 1 + usize::from(addr.password.is_some()) + usize::from(addr.db != 0);
    let check = async {
        s.write_all(&hello).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut got = 0;
        while got < expected {
            let mut chunk = [0u8; 512];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during handshake".to_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some((r, used)) = resp::parse(&buf).map_err(|e| e.to_string())? {
                buf.drain(..used);
                if let Reply::Error(e) = r {
                    return Err(e);
                }
                got += 1;
            }
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(1), check)
        .await
        .map_err(|_| "handshake timed out".to_owned())??;
    Ok(s)
}

async fn connection(
    addr: RedisAddr,
    mut rx: mpsc::Receiver<Request>,
    up: Arc<AtomicBool>,
    reset: Arc<Notify>,
    reconnects: Arc<AtomicU64>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut was_up = false;
    // Failed attempts in a row: the first is a warning, the rest debug.
    let mut failures = 0u64;
    loop {
        match open(&addr).await {
            Ok(stream) => {
                backoff = Duration::from_millis(100);
                failures = 0;
                if was_up {
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(host = %addr.host, port = addr.port, "redis connected");
                up.store(true, Ordering::Release);
                was_up = true;
                let why = serve(stream, &mut rx, &reset).await;
                up.store(false, Ordering::Release);
                tracing::warn!(host = %addr.host, port = addr.port, reason = %why, "redis connection lost; using local state");
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(host = %addr.host, port = addr.port, error = %e, "redis unreachable; using local state and retrying");
                } else {
                    tracing::debug!(host = %addr.host, port = addr.port, error = %e, "redis connect failed");
                }
                failures += 1;
            }
        }
        // While down, answer queued calls at once, until the next attempt.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                req = rx.recv() => match req {
                    Some(r) => { let _ = r.reply.send(Err(RedisError::Down)); }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Pipelines requests over one connection until it fails or is reset.
async fn serve(stream: TcpStream, rx: &mut mpsc::Receiver<Request>, reset: &Notify) -> String {
    let (mut read, mut write) = stream.into_split();
    let mut pending: VecDeque<oneshot::Sender<Result<Reply, RedisError>>> = VecDeque::new();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let why = loop {
        tokio::select! {
            req = rx.recv() => {
                let Some(req) = req else { break "shutting down".to_owned() };
                if let Err(e) = write.write_all(&req.cmd).await {
                    let _ = req.reply.send(Err(RedisError::Lost));
                    break e.to_string();
                }
                pending.push_back(req.reply);
            }
            n = read.read(&mut chunk) => {
                match n {
                    Ok(0) => break "closed by server".to_owned(),
                    Err(e) => break e.to_string(),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                loop {
                    match resp::parse(&buf) {
                        Ok(Some((reply, used))) => {
                            buf.drain(..used);
                            if let Some(tx) = pending.pop_front() {
                                let _ = tx.send(Ok(reply));
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return fail(&mut pending, e.to_string()),
                    }
                }
            }
            _ = reset.notified() => break "reset after a timeout".to_owned(),
        }
    };
    fail(&mut pending, why)
}

fn fail(pending: &mut VecDeque<oneshot::Sender<Result<Reply, RedisError>>>, why: String) -> String {
    for tx in pending.drain(..) {
        let _ = tx.send(Err(RedisError::Lost));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a =
            RedisAddr::parse("redis://:s3cret@10.0.0.5:6380/2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            a,
            RedisAddr {
                host: "10.0.0.5".into(),
                port: 6380,
                password: Some("s3cret".into()),
                db: 2
            }
        );
        let b = RedisAddr::parse("redis://localhost").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((b.host.as_str(), b.port, b.db), ("localhost", 6379, 0));
        let c = RedisAddr::parse("redis://[::1]:7000/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.host.as_str(), c.port), ("::1", 7000));
        assert!(RedisAddr::parse("http://x").is_err());
        assert!(RedisAddr::parse("redis://x:port").is_err());
    }
}
