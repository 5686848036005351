//! The connection to Redis: the `redis` crate's multiplexed connection
//! (requests pipelined on one socket, RESP3), over TCP or TLS (rustls),
//! as an ACL user or with a password, to one server or to the master a
//! set of Sentinels names. One task keeps it: it connects, reconnects
//! with capped backoff when the connection is lost or a call missed its
//! deadline, and asks the Sentinels again each time. While there is no
//! connection, calls fail at once instead of waiting, so callers fall back
//! to local state without delay (docs/operations.md, "When Redis is slow
//! or down").

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, PushKind,
    TlsCertificates, Value,
};
use tokio::sync::Notify;

/// Why a Redis call did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    #[error("redis is down")]
    Down,
    #[error("redis connection lost: {0}")]
    Lost(String),
    #[error("redis error reply: {0}")]
    Reply(String),
}

/// Where and how to connect (`[state] redis`, `tls_ca`, `sentinels`):
/// `redis://` or `rediss://` (TLS), `[user][:password]@`, host, port,
/// `/db`. With Sentinels, the URL's host is the master's name as the
/// Sentinels know it, and its credentials, database and TLS apply to the
/// master (and TLS and the CA to the Sentinels too).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAddr {
    /// The validated URL; it may hold a password, so it is never shown.
    url: String,
    /// Whether the URL asks for TLS (`rediss://`).
    pub tls: bool,
    /// The host (or master name) and port, for logs.
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub db: i64,
    /// PEM of the CA(s) that sign the server's certificate, when not the
    /// system's roots (`tls_ca`).
    pub ca_pem: Option<Vec<u8>>,
    /// Sentinel addresses (`host:port`); empty: connect to `host:port`.
    pub sentinels: Vec<(String, u16)>,
}

/// The password never reaches a log or an error message.
impl std::fmt::Debug for RedisAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAddr")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("db", &self.db)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("sentinels", &self.sentinels)
            .finish()
    }
}

impl RedisAddr {
    /// Parses a `redis://` or `rediss://` URL (the forms of the `redis`
    /// crate: `redis://[user][:password@]host[:port][/db]`). The error
    /// never repeats the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<RedisAddr, String> {
        let tls = if url.starts_with("rediss://") {
            true
        } else if url.starts_with("redis://") {
            false
        } else {
            return Err("must start with redis:// or rediss:// (TLS)".to_owned());
        };
        let info = url
            .into_connection_info()
            .map_err(|e| format!("not a Redis URL ({})", e.category()))?;
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            _ => return Err("must name a host".to_owned()),
        };
        if host.is_empty() {
            return Err("host missing".to_owned());
        }
        let settings = info.redis_settings();
        Ok(RedisAddr {
            url: url.to_owned(),
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            username: settings.username().map(str::to_owned),
            db: settings.db(),
            ca_pem: None,
            sentinels: Vec::new(),
        })
    }

    /// The same address, the server's certificate checked against the CA
    /// certificates in the PEM file at `path` (`tls_ca`).
    pub fn with_ca(mut self, path: &Path) -> Result<RedisAddr, String> {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
        self.ca_pem = Some(pem);
        Ok(self)
    }

    /// What the logs call the server: `host:port`, or the master's name
    /// and the Sentinels.
    pub fn describe(&self) -> String {
        if self.sentinels.is_empty() {
            format!("{}:{}", self.host, self.port)
        } else {
            format!(
                "master {} via {} sentinels",
                self.host,
                self.sentinels.len()
            )
        }
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: None,
            root_cert: self.ca_pem.clone(),
        }
    }

    /// A client of the server the URL names, speaking RESP3 (the crate
    /// reports a lost connection only to a RESP3 connection's push sender).
    fn client(&self) -> Result<Client, redis::RedisError> {
        let info = self.url.as_str().into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        if self.tls && self.ca_pem.is_some() {
            Client::build_with_tls(info, self.certificates())
        } else {
            Client::open(info)
        }
    }

    /// A client of the master the Sentinels name now.
    async fn master(&self) -> Result<Client, redis::RedisError> {
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        let info = self.url.as_str().into_connection_info()?;
        let settings = info.redis_settings();
        let addrs = self.sentinels.iter().map(|(h, p)| {
            if self.tls {
                ConnectionAddr::TcpTls {
                    host: h.clone(),
                    port: *p,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(h.clone(), *p)
            }
        });
        let mut b = SentinelClientBuilder::new(addrs, &self.host, SentinelServerType::Master)?
            .set_client_to_redis_db(settings.db())
            .set_client_to_redis_protocol(ProtocolVersion::RESP3);
        if let Some(u) = settings.username() {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = settings.password() {
            b = b.set_client_to_redis_password(p);
        }
        if self.tls {
            b = b
                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            if self.ca_pem.is_some() {
                b = b
                    .set_client_to_redis_certificates(self.certificates())
                    .set_client_to_sentinel_certificates(self.certificates());
            }
        }
        b.build()?.async_get_client().await
    }
}

/// The Redis connection shared by every task.
pub struct Redis {
    connection: Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    /// Wakes the connection task to drop the connection and make another.
    lost: Notify,
    pub reconnects: AtomicU64,
}

impl Redis {
    /// Starts the connection task (inside a tokio runtime).
    pub fn start(addr: RedisAddr) -> Arc<Redis> {
        let redis = Arc::new(Redis {
            connection: Mutex::new(None),
            up: AtomicBool::new(false),
            lost: Notify::new(),
            reconnects: AtomicU64::new(0),
        });
        tokio::spawn(keep_connected(addr, Arc::downgrade(&redis)));
        redis
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Drops the connection (after a timeout: the server may hang; after
    /// an I/O error; when the server became a replica) and reconnects;
    /// calls fail fast until it is back.
    pub fn reset(&self) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.take();
            self.lost.notify_one();
        }
    }

    fn take(&self) -> Option<MultiplexedConnection> {
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Runs `pipe` (one round trip) and returns its replies in order;
    /// fails at once while the connection is down, and with the first
    /// error reply.
    pub async fn pipeline(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>, RedisError> {
        let mut conn = self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(RedisError::Down)?;
        pipe.query_async::<Vec<Value>>(&mut conn)
            .await
            .map_err(|e| {
                // A master demoted by a failover answers writes with
                // READONLY: the Sentinels name the new one.
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    || e.code() == Some("READONLY")
                {
                    self.reset();
                    RedisError::Lost(e.to_string())
                } else {
                    RedisError::Reply(e.to_string())
                }
            })
    }
}

/// Connects under a deadline: the client (of the server, or of the master
/// the Sentinels name), the connection, a PING.
async fn open(addr: &RedisAddr, lost: Arc<Notify>) -> Result<MultiplexedConnection, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(None)
        .set_push_sender(move |info: redis::PushInfo| {
            if info.kind == PushKind::Disconnection {
                lost.notify_one();
            }
            Ok::<(), std::convert::Infallible>(())
        });
    let connect = async {
        let client = if addr.sentinels.is_empty() {
            addr.client()?
        } else {
            addr.master().await?
        };
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING")
            .query_async::<Value>(&mut conn)
            .await
            .map(|_| conn)
    };
    tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// The connection task: connect, serve until the connection is lost or
/// reset, wait (100 ms doubling to 2 s while attempts fail), again. Ends
/// when the [`Redis`] is dropped.
async fn keep_connected(addr: RedisAddr, redis: std::sync::Weak<Redis>) {
    let mut backoff = Duration::from_millis(100);
    let mut was_up = false;
    // Failed attempts in a row: the first is a warning, the rest debug.
    let mut failures = 0u64;
    let server = addr.describe();
    loop {
        // This connection's own signal: a late one from an earlier
        // connection cannot end it.
        let lost = Arc::new(Notify::new());
        let opened = open(&addr, lost.clone()).await;
        let Some(me) = redis.upgrade() else { return };
        match opened {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                failures = 0;
                if was_up {
                    me.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(server = %server, "redis connected");
                *me.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
                me.up.store(true, Ordering::Release);
                was_up = true;
                let why = tokio::select! {
                    biased;
                    _ = me.lost.notified() => "reset after an error or a missed deadline",
                    _ = lost.notified() => "closed",
                };
                if !me.up.swap(false, Ordering::AcqRel) && why == "closed" {
                    // A call's reset raced the close: take its wake-up
                    // now, or it would end the next connection at once.
                    me.lost.notified().await;
                }
                me.take();
                tracing::warn!(server = %server, reason = why, "redis connection lost; using local state");
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(server = %server, error = %e, "redis unreachable; using local state and retrying");
                } else {
                    tracing::debug!(server = %server, error = %e, "redis connect failed");
                }
                failures += 1;
            }
        }
        drop(me);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a =
            RedisAddr::parse("redis://:s3cret@10.0.0.5:6380/2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (a.host.as_str(), a.port, a.db, a.tls, a.username.as_deref()),
            ("10.0.0.5", 6380, 2, false, None)
        );
        assert!(!format!("{a:?}").contains("s3cret"));
        let b = RedisAddr::parse("redis://localhost").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((b.host.as_str(), b.port, b.db), ("localhost", 6379, 0));
        let c = RedisAddr::parse("redis://[::1]:7000/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.host.as_str(), c.port), ("::1", 7000));
        let d = RedisAddr::parse("rediss://callgate:pw@redis.example.net:6380/1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (d.tls, d.username.as_deref(), d.port, d.db),
            (true, Some("callgate"), 6380, 1)
        );
        assert!(!format!("{d:?}").contains("pw"));
        assert!(RedisAddr::parse("http://x").is_err());
        let e = RedisAddr::parse("redis://u:hunter2@x:port")
            .err()
            .unwrap_or_default();
        assert!(!e.is_empty() && !e.contains("hunter2"), "{e}");
    }
}
