//! The write side of the async baseline (see `async_peer.rs`): the multiplex task, which
//! moves `NetworkMessage`s from `write_reqs` to the `msg` / `stream_msg` channels (fragmenting
//! large ones with [`OutboundStream`]), and the writer task, which `select!`s between the next
//! frame and the close signal and writes one frame per system call, as the original does.
//! Included by `async_peer.rs` with `#[path]`; dev-only.

use std::time::Duration;

use bytes::BytesMut;
use syncpeer::proto::stream::fragment_size;
use syncpeer::proto::{MultiplexMessage, NetworkMessage, OutboundStream, StreamId, encode_frame};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

use super::Variant;

/// The original's per-frame write timeout and flush/close timeout (`TRANSPORT_TIMEOUT`).
const TRANSPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The multiplex task: `write_reqs` → `msg` / `stream_msg`. Ends when `write_reqs` is closed
/// and empty. A frame it cannot hand on (writer gone) is lost, as in the original.
pub(super) async fn multiplex_task(
    mut write_reqs: mpsc::Receiver<NetworkMessage>,
    msg_tx: mpsc::Sender<MultiplexMessage>,
    stream_tx: mpsc::Sender<MultiplexMessage>,
    max_frame_size: usize,
    max_message_size: usize,
) {
    let mut next_stream_id = 0u32;
    while let Some(message) = write_reqs.recv().await {
        if message.data_len() > fragment_size(max_frame_size) {
            let id = StreamId(next_stream_id);
            let Ok(stream) = OutboundStream::new(id, message, max_frame_size, max_message_size)
            else {
                continue;
            };
            next_stream_id = next_stream_id.wrapping_add(1);
            for frame in stream {
                if stream_tx.send(frame).await.is_err() {
                    break;
                }
            }
        } else {
            let _ = msg_tx.send(MultiplexMessage::Message(message)).await;
        }
    }
}

/// The next frame from either channel, choosing fairly when both have one (as the original's
/// `select(msg_rx, stream_msg_rx)`); `None` once both are closed and empty.
async fn next_out(
    msg_rx: &mut mpsc::Receiver<MultiplexMessage>,
    stream_rx: &mut mpsc::Receiver<MultiplexMessage>,
    open: &mut [bool; 2],
) -> Option<MultiplexMessage> {
    loop {
        if !open[0] && !open[1] {
            return None;
        }
        let (m, i) = tokio::select! {
            m = msg_rx.recv(), if open[0] => (m, 0),
            m = stream_rx.recv(), if open[1] => (m, 1),
        };
        match m {
            Some(m) => return Some(m),
            None => open[i] = false,
        }
    }
}

/// The writer task. Returns (frames written, frames found queued when it stopped).
pub(super) async fn writer_task(
    mut half: OwnedWriteHalf,
    mut msg_rx: mpsc::Receiver<MultiplexMessage>,
    mut stream_rx: mpsc::Receiver<MultiplexMessage>,
    mut close_rx: oneshot::Receiver<()>,
    max_frame_size: usize,
    variant: Variant,
) -> (u64, u64) {
    let mut open = [true, true];
    let mut buf = BytesMut::new();
    let mut written = 0u64;
    loop {
        let drained = !open[0] && !open[1];
        tokio::select! {
            m = next_out(&mut msg_rx, &mut stream_rx, &mut open), if !drained => {
                if let Some(m) = m {
                    written += write_frame(&mut half, &mut buf, &m, max_frame_size).await;
                }
            }
            _ = &mut close_rx => break,
        }
    }
    if variant == Variant::Fixed {
        // The multiplex task has ended: both channels are closed, and hold the last frames.
        while let Some(m) = next_out(&mut msg_rx, &mut stream_rx, &mut open).await {
            written += write_frame(&mut half, &mut buf, &m, max_frame_size).await;
        }
    }
    let mut discarded = 0;
    while msg_rx.try_recv().is_ok() || stream_rx.try_recv().is_ok() {
        discarded += 1;
    }
    let _ = tokio::time::timeout(TRANSPORT_TIMEOUT, async {
        let _ = half.flush().await;
        let _ = half.shutdown().await;
    })
    .await;
    (written, discarded)
}

/// Encodes and writes one frame; 1 if written. Errors are ignored, as the original does.
async fn write_frame(
    half: &mut OwnedWriteHalf,
    buf: &mut BytesMut,
    m: &MultiplexMessage,
    max_frame_size: usize,
) -> u64 {
    buf.clear();
    if encode_frame(m, max_frame_size, buf).is_err() {
        return 0;
    }
    match tokio::time::timeout(TRANSPORT_TIMEOUT, half.write_all(buf)).await {
        Ok(Ok(())) => 1,
        _ => 0,
    }
}
