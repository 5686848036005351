//! The shared state store on Redis, for several callgate instances behind
//! one trunk group (DESIGN.md, "State"). Keys, under the configured prefix:
//!
//! * `v:<window>:<value>` — a sorted set of event times (Unix ms) per
//!   velocity window, trimmed to the window and expiring with it; one
//!   server-side script per event keeps the window exact and atomic;
//! * `r:<signature>` — the Call-ID that first used a PASSporT, set only
//!   if absent (`SET NX GET`, Redis ≥ 7.0) and expiring with the
//!   freshness window;
//! * `d:<url>` — a certificate chain or CRL as fetched, with its TTL.
//!
//! Commands of one operation are pipelined: one round trip per call
//! (`redis::Pipeline` on the multiplexed connection of [`super::redis`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::redis::{Redis, RedisError};
use super::{StateError, StateStore, StoreFuture, WindowEvent};

/// Records an event in a sliding window and returns the window's count:
/// drop events at or before `now - window`, add this one, bound the set,
/// expire the key with the window.
/// KEYS[1] = the window's key; ARGV = now ms, window ms, unique member, bound.
const COUNT_SCRIPT: &str = "\
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local bound = tonumber(ARGV[4])
if n > bound then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - bound - 1)
  n = bound
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n";

/// Events remembered per window key (as in the local store): a count
/// saturates there, far above any sensible rule threshold.
const MAX_EVENTS_PER_KEY: u64 = 10_000;

/// The Redis store.
pub struct RedisStore {
    redis: Arc<Redis>,
    prefix: String,
    /// Makes event members unique across instances and calls.
    instance: u64,
    sequence: AtomicU64,
}

fn to_state(e: RedisError) -> StateError {
    match e {
        RedisError::Reply(r) => StateError::Protocol(r),
        other => StateError::Unavailable(other.to_string()),
    }
}

impl RedisStore {
    pub fn new(redis: Arc<Redis>, prefix: String) -> RedisStore {
        RedisStore {
            redis,
            prefix,
            instance: fastrand::u64(..),
            sequence: AtomicU64::new(0),
        }
    }

    fn key(&self, kind: &str, rest: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + kind.len() + rest.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(kind.as_bytes());
        k.extend_from_slice(rest);
        k
    }
}

impl StateStore for RedisStore {
    fn count<'a>(&'a self, events: &'a [WindowEvent], now_ms: u64) -> StoreFuture<'a, Vec<u64>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for e in events {
                let seq = self.sequence.fetch_add(1, Relaxed);
                pipe.cmd("EVAL")
                    .arg(COUNT_SCRIPT)
                    .arg(1)
                    .arg(self.key("", e.key.as_bytes()))
                    .arg(now_ms)
                    .arg((e.window.as_millis() as u64).max(1))
                    .arg(format!("{now_ms}-{:x}-{seq}", self.instance))
                    .arg(MAX_EVENTS_PER_KEY);
            }
            let replies = self.redis.pipeline(&pipe).await.map_err(to_state)?;
            replies
                .into_iter()
                .map(|r| match r {
                    Value::Int(n) => u64::try_from(n)
                        .map_err(|_| StateError::Protocol("negative count".to_owned())),
                    other => Err(StateError::Protocol(format!("count: {other:?}"))),
                })
                .collect()
        })
    }

    fn claim<'a>(
        &'a self,
        key: &'a [u8],
        owner: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(self.key("r:", key))
                .arg(owner)
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg((ttl.as_millis() as u64).max(1));
            let replies = self.redis.pipeline(&pipe).await.map_err(to_state)?;
            match replies.as_slice() {
                [Value::Nil] => Ok(None),
                [Value::BulkString(holder)] => {
                    Ok((holder.as_slice() != owner).then(|| holder.clone()))
                }
                other => Err(StateError::Protocol(format!("claim: {other:?}"))),
            }
        })
    }

    fn get_doc<'a>(&'a self, url: &'a str) -> StoreFuture<'a, Option<(Vec<u8>, Duration)>> {
        Box::pin(async move {
            let k = self.key("d:", url.as_bytes());
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&k).cmd("PTTL").arg(&k);
            let replies = self.redis.pipeline(&pipe).await.map_err(to_state)?;
            match replies.as_slice() {
                [Value::BulkString(body), Value::Int(ms)] if *ms > 0 => {
                    Ok(Some((body.clone(), Duration::from_millis(*ms as u64))))
                }
                [Value::BulkString(_) | Value::Nil, Value::Int(_)] => Ok(None),
                other => Err(StateError::Protocol(format!("document: {other:?}"))),
            }
        })
    }

    fn put_doc<'a>(&'a self, url: &'a str, body: &'a [u8], ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(self.key("d:", url.as_bytes()))
                .arg(body)
                .arg("PX")
                .arg((ttl.as_millis() as u64).max(1));
            self.redis.pipeline(&pipe).await.map_err(to_state)?;
            Ok(())
        })
    }

    fn is_available(&self) -> bool {
        self.redis.is_up()
    }

    fn deadline_missed(&self) {
        self.redis.reset();
    }
}
