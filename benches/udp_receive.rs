//! Criterion benchmarks of the SIP listeners' receive path (issue 14,
//! floods): what reading one datagram costs, the old way against the
//! batched one (`src/sip/transport/udp.rs`, `src/sip/transport/batch.rs`).
//!
//! Each iteration queues a burst of datagrams at a loopback socket (not
//! timed), then times reading all of them:
//! - `…/recv_from_each`: one `recv_from` per datagram on the async
//!   runtime (tokio, current thread, as `callgate run`): the receive loop
//!   before batching;
//! - `…/recvmmsg_32`: readiness, then `recvmmsg` batches of 32 through
//!   [`Batch`], as the receive loop now does.
//!
//! Bursts: 256 datagrams of 512 bytes (requests and responses of a call),
//! 256 of 4 KiB (a signed INVITE), 32 of 60,000 bytes (`flood.sh`'s
//! `oversized`). Throughput is per datagram. The socket asks for an 8 MiB
//! receive buffer; a host whose `net.core.rmem_max` holds less than a
//! burst fails the run with a message rather than timing a partial one.
//!
//! `cargo bench --bench udp_receive`

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::io::Interest;

use callgate::sip::transport::batch::{Batch, MAX_DATAGRAM};
use callgate::sip::transport::udp::RECEIVE_BATCH;

/// The receiving socket (8 MiB buffer asked for) and a sender.
fn sockets() -> (Arc<tokio::net::UdpSocket>, UdpSocket, SocketAddr) {
    let rx = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rx.set_recv_buffer_size(8 << 20)
        .unwrap_or_else(|e| panic!("{e}"));
    rx.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    rx.bind(&any.into()).unwrap_or_else(|e| panic!("{e}"));
    let rx: UdpSocket = rx.into();
    let to = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let rx = tokio::net::UdpSocket::from_std(rx).unwrap_or_else(|e| panic!("{e}"));
    let tx = UdpSocket::bind(any).unwrap_or_else(|e| panic!("{e}"));
    (Arc::new(rx), tx, to)
}

fn fill(tx: &UdpSocket, to: SocketAddr, payload: &[u8], count: usize) {
    for _ in 0..count {
        tx.send_to(payload, to).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Bounds a drain: a burst the receive buffer cannot hold never arrives
/// whole.
fn check_deadline(started: Instant, got: usize, count: usize) {
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "only {got} of {count} datagrams arrived: raise net.core.rmem_max"
    );
}

/// The old loop: one `recv_from` await per datagram.
async fn drain_each(rx: &tokio::net::UdpSocket, buf: &mut [u8], count: usize) {
    let started = Instant::now();
    let mut got = 0;
    while got < count {
        match tokio::time::timeout(Duration::from_secs(2), rx.recv_from(buf)).await {
            Ok(Ok(_)) => got += 1,
            _ => check_deadline(started, got, count),
        }
    }
}

/// The batched loop: readiness, then `recvmmsg` until the burst is read.
async fn drain_batched(rx: &tokio::net::UdpSocket, batch: &mut Batch<RECEIVE_BATCH>, count: usize) {
    let started = Instant::now();
    let mut got = 0;
    while got < count {
        if tokio::time::timeout(Duration::from_secs(2), rx.readable())
            .await
            .is_err()
        {
            check_deadline(started, got, count);
        }
        if let Ok(n) = rx.try_io(Interest::READABLE, || batch.recv(rx, false)) {
            for i in 0..n {
                if let Some((data, _)) = batch.get(i) {
                    std::hint::black_box(data);
                }
            }
            got += n;
        }
    }
}

fn receive(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("sip_receive");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(4));
    for (size, count) in [(512usize, 256usize), (4096, 256), (60_000, 32)] {
        let payload = vec![b'x'; size];
        g.throughput(Throughput::Elements(count as u64));
        let (rx, tx, to) = rt.block_on(async { sockets() });
        let mut buf = vec![0u8; MAX_DATAGRAM];
        g.bench_function(format!("recv_from_each/{size}B"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    fill(&tx, to, &payload, count);
                    let t = Instant::now();
                    rt.block_on(drain_each(&rx, &mut buf, count));
                    total += t.elapsed();
                }
                total
            })
        });
        let mut batch = Batch::<RECEIVE_BATCH>::new(MAX_DATAGRAM);
        g.bench_function(format!("recvmmsg_32/{size}B"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    fill(&tx, to, &payload, count);
                    let t = Instant::now();
                    rt.block_on(drain_batched(&rx, &mut batch, count));
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, receive);
criterion_main!(benches);
