//! TURN over TCP (RFC 8656 §5): STUN messages and ChannelData back to back on a
//! stream, ChannelData padded to a multiple of four bytes; TURN over TLS is the same
//! inside TLS. One [`TcpConn`] per client connection stands in for the listening
//! socket of UDP: what the server sends to "the client" goes down this stream.

use std::net::SocketAddr;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use webrtc_util::Conn;

/// Largest frame accepted: a STUN header and attributes, or ChannelData, that fits a
/// UDP datagram.
const MAX_FRAME: usize = 1500 + 4;

/// Reads one frame (without ChannelData padding) into `buf`. `Ok(None)` at a clean
/// end of stream; an error for anything that is neither STUN nor ChannelData, or a
/// stream that ends inside a frame.
pub(crate) async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<()>> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let (total, padded) = match header[0] >> 6 {
        // STUN: 20-byte header, attributes already padded
        0b00 => (20 + length, 20 + length),
        // ChannelData: 4-byte header, padded on streams
        0b01 => (4 + length, (4 + length).next_multiple_of(4)),
        _ => return Err(std::io::Error::other("neither STUN nor ChannelData")),
    };
    if padded > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    buf.clear();
    buf.extend_from_slice(&header);
    buf.resize(padded, 0);
    reader.read_exact(&mut buf[4..]).await?;
    buf.truncate(total);
    Ok(Some(()))
}

/// The server's side of one TURN-over-TCP (or TLS) client connection, writing to
/// `W`: the write half of its stream.
pub(crate) struct TcpConn<W> {
    writer: Mutex<W>,
    /// The listening address: the "destination" of the client's 5-tuple.
    local: SocketAddr,
    peer: SocketAddr,
}

impl<W> TcpConn<W> {
    pub fn new(writer: W, local: SocketAddr, peer: SocketAddr) -> Self {
        TcpConn {
            writer: Mutex::new(writer),
            local,
            peer,
        }
    }
}

#[async_trait]
impl<W: AsyncWrite + Unpin + Send + Sync + 'static> Conn for TcpConn<W> {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other(
            "a TURN client connection is connected".into(),
        ))
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other(
            "the server reads TCP frames itself".into(),
        ))
    }

    async fn recv_from(&self, _buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        Err(webrtc_util::Error::Other(
            "the server reads TCP frames itself".into(),
        ))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.send_to(buf, self.peer).await
    }

    /// Writes one frame, padding ChannelData to four bytes. There is only one
    /// destination: the client at the other end.
    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        const PAD: [u8; 3] = [0; 3];
        let pad = if buf.first().is_some_and(|b| b >> 6 == 0b01) {
            buf.len().next_multiple_of(4) - buf.len()
        } else {
            0
        };
        let mut writer = self.writer.lock().await;
        if pad == 0 {
            writer.write_all(buf).await?;
        } else {
            writer.write_all(&[buf, &PAD[..pad]].concat()).await?;
        }
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    /// Called when the allocation ends: the connection goes with it.
    async fn close(&self) -> webrtc_util::Result<()> {
        let _ = self.writer.lock().await.shutdown().await;
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
