//! The whole call pipeline, driven in process: bytes in from the trunk or
//! the PBX through admit, parse, sanitize, classify, assess, route, tag,
//! anchor media and the proxy core, exactly as the transport edge hands
//! them over ([`Sink::on_message`]). What the gate sends goes out of real
//! loopback sockets to a discard port; the point is that no sequence of
//! messages from either side panics or wedges the gate.
//!
//! One gate serves every input (starting one costs milliseconds), so state
//! carries over from one input to the next as it would in service; the
//! dialog, transaction and media tables are bounded by their limits.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::config::{Config, Side};
use crate::gate::{start, Gate};
use crate::sip::proxy::Peer;
use crate::sip::side::Transport;
use crate::sip::transport::Sink;

/// Separates messages in one fuzz input.
pub const SEPARATOR: &[u8] = b"\n\x00--\x00\n";

struct Harness {
    runtime: tokio::runtime::Runtime,
    gate: Arc<Gate>,
}

/// The gate under fuzzing: UDP on both sides on loopback, a policy (so
/// every trunk INVITE is assessed, routed and tagged) and media anchoring
/// on a small port range. `None` when it cannot start (ports taken): the
/// target then does nothing rather than report a false crash.
fn harness() -> Option<&'static Harness> {
    static HARNESS: OnceLock<Option<Harness>> = OnceLock::new();
    HARNESS
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .ok()?;
            let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
            let media_min = 40_000 + (std::process::id() % 500) as u16 * 40;
            let text = format!(
                "[trunk]\nudp = \"127.0.0.1:0\"\nallow = [\"0.0.0.0/0\", \"::/0\"]\non_denied = \"drop\"\n\
                 rate_limit = 1000000\ntargets = [\"sip:127.0.0.1:9;transport=udp\"]\n\
                 [pbx]\nudp = \"127.0.0.1:0\"\nallow = [\"0.0.0.0/0\", \"::/0\"]\non_denied = \"drop\"\n\
                 rate_limit = 1000000\ntargets = [\"sip:127.0.0.1:9;transport=udp\"]\n\
                 [health]\ninterval_secs = 0\n\
                 [risk]\npolicy = \"{}\"\n\
                 [media]\nenabled = true\nport_min = {media_min}\nport_max = {}\n",
                repo.join("sip-config/policy.toml").display(),
                media_min + 39
            );
            let cfg = Config::parse(&text, &repo.join("sip-config/fuzz.toml")).ok()?;
            let running = runtime.block_on(start(&cfg, None)).ok()?;
            Some(Harness {
                runtime,
                gate: running.gate,
            })
        })
        .as_ref()
}

/// Each part of `data` between [`SEPARATOR`]s is one datagram; its first
/// byte picks the side it arrives on and the source address (so admission
/// buckets, dialogs and transactions see several peers).
pub fn exercise(data: &[u8]) -> usize {
    let Some(h) = harness() else {
        return 0;
    };
    let mut sum = 0;
    let _guard = h.runtime.enter();
    for part in split(data) {
        let Some((&choice, msg)) = part.split_first() else {
            continue;
        };
        let side = if choice & 1 == 0 {
            Side::Trunk
        } else {
            Side::Pbx
        };
        let peer = Peer {
            side,
            transport: Transport::Udp,
            addr: SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1 + (choice >> 1) % 4), 9)),
            conn: None,
        };
        h.gate.on_message(peer, Bytes::copy_from_slice(msg));
        sum += msg.len();
    }
    sum
}

/// The parts of `data` between separators.
pub fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memmem::find(r, SEPARATOR) {
            Some(i) => {
                rest = Some(&r[i + SEPARATOR.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}
