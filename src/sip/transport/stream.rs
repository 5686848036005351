//! Stream transports (TCP, TLS): framing by Content-Length (RFC 3261
//! §18.3), CRLF keep-alives (RFC 5626 §4.4.1), an idle timeout between
//! messages and a deadline for each whole message, one writer task per
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{ConnHandle, ConnTable, Sink};
use crate::sip::message::{frame_stream, keepalive_prefix, Limits};
use crate::sip::proxy::Peer;
use crate::sip::side::{Side, Transport};

/// Settings shared by every stream connection.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub limits: Limits,
    /// A connection with no traffic for this long between messages is
    /// closed (`limits.tcp_idle_secs`).
    pub idle: Duration,
    /// A message must arrive whole within this time of its first byte
    /// (`limits.message_deadline_secs`), however its bytes trickle in.
    pub message_deadline: Duration,
}

/// Why a stream connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The peer closed it, or a read failed.
    Peer,
    /// No byte between messages for the idle time.
    Idle,
    /// A message was still incomplete at its deadline: the slow-drip
    /// attack (one byte now and then holds a connection and a buffer
    /// forever when only an idle timer, reset by each byte, guards it).
    MessageDeadline,
    /// The bytes cannot be framed as SIP (RFC 3261 §18.3), or a message is
    /// over `max_message_bytes`.
    Unframeable,
}

impl Closed {
    /// The label of this reason in the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Peer => "peer",
            Closed::Idle => "idle",
            Closed::MessageDeadline => "message_deadline",
            Closed::Unframeable => "unframeable",
        }
    }
}

/// Outbound queue depth per connection; a peer that stops reading is
/// disconnected rather than allowed to grow memory.
const QUEUE: usize = 1024;

/// Which connection a stream is, as seen from callgate.
#[derive(Debug, Clone, Copy)]
pub struct StreamId {
    pub side: Side,
    pub transport: Transport,
    pub remote: SocketAddr,
}

/// Runs one connection until it closes: registers it, reads and frames
/// messages into the sink, writes queued messages (`first` before anything
/// else, for outbound connections). Returns why it ended.
pub async fn serve<S>(
    stream: S,
    id: StreamId,
    table: Arc<ConnTable>,
    sink: Arc<dyn Sink>,
    settings: StreamSettings,
    first: Option<Bytes>,
) -> Closed
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    let handle = table.register(id.side, id.transport, id.remote, tx.clone());
    if let Some(b) = first {
        let _ = tx.try_send(b);
    }
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_task = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if writer.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let closed = read_loop(&mut reader, &handle, &sink, settings).await;
    table.remove(handle.id);
    drop(tx);
    drop(handle);
    writer_task.abort();
    closed
}

/// Reads and frames messages until the connection ends. Between messages
/// the idle timer runs; from the first byte of a message (anything but
/// keep-alive CRLFs) the message deadline runs too, and is not extended by
/// further bytes.
async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    handle: &ConnHandle,
    sink: &Arc<dyn Sink>,
    settings: StreamSettings,
) -> Closed {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // When the message now in `buf` must be complete.
    let mut message_due: Option<Instant> = None;
    loop {
        // Frame every whole message already buffered.
        loop {
            match frame_stream(&buf, &settings.limits) {
                Ok(Some(frame)) => {
                    let _ = buf.split_to(frame.skip);
                    let msg = buf.split_to(frame.len).freeze();
                    message_due = None;
                    let peer = Peer {
                        side: handle.side,
                        transport: handle.transport,
                        addr: handle.remote,
                        conn: Some(handle.id),
                    };
                    sink.on_message(peer, msg);
                }
                Ok(None) => {
                    // A double-CRLF ping is answered with a single CRLF pong.
                    let ka = keepalive_prefix(&buf);
                    if ka == buf.len() && ka >= 4 {
                        buf.clear();
                        let _ = handle.tx.try_send(Bytes::from_static(b"\r\n"));
                    }
                    if ka < buf.len() {
                        // Part of a message: its deadline starts now, once.
                        message_due
                            .get_or_insert_with(|| Instant::now() + settings.message_deadline);
                    }
                    break;
                }
                Err(e) => {
                    tracing::info!(remote = %handle.remote, error = %e, "closing stream that cannot be framed");
                    return Closed::Unframeable;
                }
            }
        }
        if buf.len() > settings.limits.max_message_bytes + 1024 {
            tracing::info!(remote = %handle.remote, "closing stream: message over size limit");
            return Closed::Unframeable;
        }
        buf.reserve(8 * 1024);
        let idle_due = Instant::now() + settings.idle;
        let due = message_due.map_or(idle_due, |m| m.min(idle_due));
        match tokio::time::timeout_at(due, reader.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Closed::Peer,
            Ok(Ok(_)) => {}
            Err(_) if message_due.is_some_and(|m| m <= due) => {
                tracing::info!(remote = %handle.remote, deadline_secs = settings.message_deadline.as_secs(), buffered = buf.len(), "closing stream: message incomplete at its deadline");
                return Closed::MessageDeadline;
            }
            Err(_) => {
                tracing::debug!(remote = %handle.remote, "closing idle stream");
                return Closed::Idle;
            }
        }
    }
}
