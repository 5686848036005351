//! Stream transports (TCP, TLS): framing by Content-Length (RFC 3261
//! §18.3), CRLF keep-alives (RFC 5626 §4.4.1), idle timeout, one writer
//! task per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    /// A connection with no traffic for this long is closed.
    pub idle: Duration,
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
/// else, for outbound connections). Returns when done.
pub async fn serve<S>(
    stream: S,
    id: StreamId,
    table: Arc<ConnTable>,
    sink: Arc<dyn Sink>,
    settings: StreamSettings,
    first: Option<Bytes>,
) where
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
    read_loop(&mut reader, &handle, &sink, settings).await;
    table.remove(handle.id);
    drop(tx);
    drop(handle);
    writer_task.abort();
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    handle: &ConnHandle,
    sink: &Arc<dyn Sink>,
    settings: StreamSettings,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        // Frame every whole message already buffered.
        loop {
            match frame_stream(&buf, &settings.limits) {
                Ok(Some(frame)) => {
                    let _ = buf.split_to(frame.skip);
                    let msg = buf.split_to(frame.len).freeze();
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
                    break;
                }
                Err(e) => {
                    tracing::info!(remote = %handle.remote, error = %e, "closing stream that cannot be framed");
                    return;
                }
            }
        }
        if buf.len() > settings.limits.max_message_bytes + 1024 {
            tracing::info!(remote = %handle.remote, "closing stream: message over size limit");
            return;
        }
        buf.reserve(8 * 1024);
        match tokio::time::timeout(settings.idle, reader.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                tracing::debug!(remote = %handle.remote, "closing idle stream");
                return;
            }
        }
    }
}
