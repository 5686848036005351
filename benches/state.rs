//! Criterion benchmarks of the shared state's round trip, against a real
//! `redis-server` started on a loopback port (skipped, with a line on
//! stderr, when there is none):
//! - `state/velocity_local`: one velocity count in this process only;
//! - `state/velocity_redis`: the same count through [`State`] with Redis
//!   (the local count, then one `EVAL` on the `redis` crate's multiplexed
//!   connection, awaited on a current-thread runtime as the gate does);
//! - `state/replay_claim_redis`: one PASSporT claim (`SET NX GET PX`).
//!
//! `cargo bench --bench state`

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use callgate::state::{State, StateConfig, WindowEvent};

/// A redis-server on a free loopback port, killed on drop.
struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child, port);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let events = [WindowEvent {
        key: "v:ani_1m:+15550103".to_owned(),
        window: Duration::from_secs(60),
    }];
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let local = State::local_only();
    c.bench_function("state/velocity_local", |b| {
        b.iter(|| rt.block_on(local.count(&events, now())))
    });
    let Some(server) = redis_server() else {
        eprintln!("no redis-server: the Redis benchmarks are skipped");
        return;
    };
    let cfg = StateConfig {
        redis: Some(
            callgate::state::redis::RedisAddr::parse(&format!("redis://127.0.0.1:{}", server.1))
                .expect("url"),
        ),
        timeout: Duration::from_secs(1),
        ..StateConfig::default()
    };
    let shared = rt.block_on(async { State::from_config(&cfg) });
    rt.block_on(async {
        for _ in 0..500 {
            if shared
                .metrics()
                .shared_answers(callgate::state::Op::Velocity)
                > 0
            {
                break;
            }
            shared.count(&events, now()).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(
        shared
            .metrics()
            .shared_answers(callgate::state::Op::Velocity)
            > 0,
        "never connected to redis-server"
    );
    // Counts made before the connection was up fell back; none after.
    let fallbacks = shared.metrics().fallbacks(callgate::state::Op::Velocity);
    c.bench_function("state/velocity_redis", |b| {
        b.iter(|| rt.block_on(shared.count(&events, now())))
    });
    let mut n = 0u64;
    c.bench_function("state/replay_claim_redis", |b| {
        b.iter(|| {
            n += 1;
            let key = n.to_be_bytes();
            rt.block_on(shared.replay_of(&key, b"call-1", Duration::from_secs(60)))
        })
    });
    assert_eq!(
        shared.metrics().fallbacks(callgate::state::Op::Velocity),
        fallbacks,
        "every measured count was Redis's"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
