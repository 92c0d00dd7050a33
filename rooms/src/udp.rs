//! Batched UDP on the media port: a room sends everything one round of its work
//! produced with `sendmmsg`, and the port reads with `recvmmsg`, one system call for
//! many datagrams each way. (Through `rustix`'s `sendmmsg`, which returns how many
//! left, and `nix`'s `recvmmsg`, which rustix lacks: both safe wrappers, as the crate
//! forbids `unsafe`, and both already in the dependency tree.)

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per system call at most, each way.
const BATCH: usize = 64;

/// Largest datagram read; anything WebRTC sends fits well below it.
const MAX_DATAGRAM: usize = 2048;

/// Datagrams waiting to leave, sent together by [`SendBatch::flush`].
#[derive(Default)]
pub(crate) struct SendBatch {
    queued: Vec<(SocketAddrAny, BytesMut)>,
}

impl SendBatch {
    pub fn push(&mut self, to: SocketAddr, data: BytesMut) {
        self.queued.push((to.into(), data));
    }

    /// Sends every queued datagram from `socket`, [`BATCH`] per system call. What the
    /// socket cannot take now (a full send buffer) is dropped, as the network would;
    /// a datagram the kernel refuses (an unreachable address) is skipped. Returns
    /// the datagrams dropped.
    pub fn flush(&mut self, socket: &UdpSocket) -> usize {
        let mut dropped = 0;
        let mut at = 0;
        while at < self.queued.len() {
            let chunk = &self.queued[at..self.queued.len().min(at + BATCH)];
            let sent = socket.try_io(Interest::WRITABLE, || send_chunk(socket, chunk));
            match sent {
                Ok(n) if n > 0 => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dropped += self.queued.len() - at;
                    break;
                }
                // The first datagram of the chunk was refused: skip it.
                _ => {
                    dropped += 1;
                    at += 1;
                }
            }
        }
        self.queued.clear();
        dropped
    }
}

fn send_chunk(socket: &UdpSocket, chunk: &[(SocketAddrAny, BytesMut)]) -> io::Result<usize> {
    let slices: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = chunk
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut headers: Vec<MMsgHdr<'_>> = chunk
        .iter()
        .zip(&slices)
        .zip(&mut controls)
        .map(|(((to, _), slice), control)| MMsgHdr::new_with_addr(to, slice, control))
        .collect();
    Ok(sendmmsg(socket, &mut headers, SendFlags::DONTWAIT)?)
}

/// Buffers for reading up to [`BATCH`] datagrams in one system call.
pub(crate) struct RecvBatch {
    buffers: Vec<[u8; MAX_DATAGRAM]>,
    /// Length and source of each datagram the last read returned (no source: none
    /// that an IP socket could have, so dropped).
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            buffers: vec![[0; MAX_DATAGRAM]; BATCH],
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// Reads what `socket` holds, up to [`BATCH`] datagrams, without waiting:
    /// `WouldBlock` when there is nothing.
    pub fn read(&mut self, socket: &UdpSocket) -> io::Result<()> {
        self.got.clear();
        let (buffers, got) = (&mut self.buffers, &mut self.got);
        socket.try_io(Interest::READABLE, || {
            // Made per read: nix's headers hold raw pointers, so they cannot be kept
            // in a task that moves between threads.
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                buffers.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            let read = recvmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &mut slices,
                MsgFlags::MSG_DONTWAIT,
                None,
            )?;
            got.extend(read.map(|m| (m.bytes, m.address.as_ref().and_then(socket_addr))));
            Ok(())
        })
    }

    /// The datagrams the last [`RecvBatch::read`] returned, with their sources.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got
            .iter()
            .zip(&self.buffers)
            .filter_map(|((len, from), buffer)| Some((&buffer[..*len], (*from)?)))
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_sent_is_a_batch_read_in_order_with_its_sources() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let mut out = SendBatch::default();
        // More than one system call's worth, of varied sizes.
        for n in 0..(BATCH + 10) {
            out.push(to, BytesMut::from(&vec![n as u8; 1 + n * 7][..]));
        }
        a.writable().await.unwrap();
        assert_eq!(out.flush(&a), 0);
        let mut read = Vec::new();
        let mut batch = RecvBatch::default();
        while read.len() < BATCH + 10 {
            b.readable().await.unwrap();
            match batch.read(&b) {
                Ok(()) => read.extend(batch.datagrams().map(|(d, from)| (d.to_vec(), from))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        for (n, (data, from)) in read.iter().enumerate() {
            assert_eq!(*from, a.local_addr().unwrap());
            assert_eq!(data, &vec![n as u8; 1 + n * 7]);
        }
    }

    #[tokio::test]
    async fn a_refused_destination_is_skipped_and_the_rest_still_leave() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut out = SendBatch::default();
        out.push(b.local_addr().unwrap(), BytesMut::from(&b"one"[..]));
        // An IPv6 destination from an IPv4 socket: the kernel refuses it.
        out.push("[::1]:9".parse().unwrap(), BytesMut::from(&b"refused"[..]));
        out.push(b.local_addr().unwrap(), BytesMut::from(&b"two"[..]));
        a.writable().await.unwrap();
        assert_eq!(out.flush(&a), 1);
        let mut buf = [0; 16];
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one");
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");
    }
}
