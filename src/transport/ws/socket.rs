//! The writing half of a connection's socket, shared by its writer task and its outbox.
//!
//! The outbox uses it for direct writes ([`WriteNow`]): a producer that finds the queue empty
//! and the writer idle writes the frame itself, without waiting. The writer task writes
//! through [`Socket::writer`] and is the only one that ever waits for the socket. The outbox
//! keeps the two apart (the writer holds a `SocketClaim` while it writes).
//!
//! The socket also counts what it accepted, and asks the kernel how much of that the peer
//! has not acknowledged yet ([`Socket::progress`]): that is how the heartbeat tells a client
//! that reads slowly through a backlog from one that is gone.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use super::framing::{MAX_HEADER, text_header_into};
use crate::outbox::{Outgoing, WriteNow, Written};
use crate::transport::driver::Progress;

/// One connection's write half. Dropping the last reference shuts the write side down.
pub struct Socket {
    half: OwnedWriteHalf,
    /// Bytes the socket accepted, from every writer.
    written: AtomicU64,
}

impl Socket {
    pub fn new(half: OwnedWriteHalf) -> Socket {
        Socket {
            half,
            written: AtomicU64::new(0),
        }
    }

    fn stream(&self) -> &TcpStream {
        self.half.as_ref()
    }

    /// The writer task's view: an [`AsyncWrite`] that waits for the socket when it is full.
    pub fn writer(&self) -> SocketWriter<'_> {
        SocketWriter(self)
    }

    fn count(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Ends the stream the peer reads (a FIN after what was written), leaving the read side
    /// open: the lingering close (see the module `ws`). Dropping the last reference does
    /// the same where this cannot.
    pub fn shutdown_write(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: shutdown(2) on a descriptor that is open while `self` is borrowed; it
            // touches no memory. A failure (the peer already gone) leaves nothing to do.
            unsafe {
                libc::shutdown(self.stream().as_raw_fd(), libc::SHUT_WR);
            }
        }
    }

    /// What the socket accepted so far, and how much of it the peer has not acknowledged.
    pub fn progress(&self) -> Progress {
        Progress {
            written: self.written.load(Ordering::Relaxed),
            unacknowledged: unacknowledged(self.stream()),
        }
    }
}

/// Bytes in the socket's send queue: not sent yet, or sent and not acknowledged (Linux's
/// `SIOCOUTQ`). Elsewhere 0: what the socket accepted then counts as taken by the peer.
#[cfg(target_os = "linux")]
fn unacknowledged(stream: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) stores one int through the pointer, which points to a live
    // c_int; the descriptor is open for as long as `stream` is borrowed.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc == 0 {
        u64::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn unacknowledged(_: &TcpStream) -> u64 {
    0
}

impl WriteNow for Socket {
    fn write_now(&self, item: &Outgoing) -> Written {
        let mut head = [0u8; MAX_HEADER];
        let (head, body): (&[u8], &[u8]) = match item {
            Outgoing::Frame(frame) => {
                let n = text_header_into(frame.len(), &mut head);
                (&head[..n], frame.json())
            }
            Outgoing::Wire(bytes) => (&[], bytes),
        };
        let total = head.len() + body.len();
        // Fails with WouldBlock without a system call while tokio knows the socket is full.
        let written = self
            .stream()
            .try_write_vectored(&[IoSlice::new(head), IoSlice::new(body)]);
        if let Ok(n) = written {
            self.count(n);
        }
        match written {
            Ok(n) if n >= total => Written::All,
            Ok(0) | Err(_) => Written::Nothing,
            Ok(n) => {
                let mut rest = Vec::with_capacity(total - n);
                if n < head.len() {
                    rest.extend_from_slice(&head[n..]);
                    rest.extend_from_slice(body);
                } else {
                    rest.extend_from_slice(&body[n - head.len()..]);
                }
                Written::Part(Bytes::from(rest))
            }
        }
    }
}

/// Writes to a shared [`TcpStream`], waiting for it to become writable when it is full.
pub struct SocketWriter<'a>(&'a Socket);

impl SocketWriter<'_> {
    fn poll_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        let stream = self.0.stream();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match write(stream) {
                // tokio cleared the readiness: wait for the next writable event.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Ok(n) => {
                    self.0.count(n);
                    return Poll::Ready(Ok(n));
                }
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncWrite for SocketWriter<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_with(cx, |s| s.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_with(cx, |s| s.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // A TCP socket has nothing buffered in user space.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Shut down when the last reference to the `Socket` drops.
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::protocol::Frame;

    async fn pair() -> (Arc<Socket>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_read, write) = accepted.unwrap().0.into_split();
        (Arc::new(Socket::new(write)), client.unwrap())
    }

    /// Splits a stream of unmasked server text frames (16-bit or 64-bit lengths) into payloads.
    fn payloads(mut wire: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            assert_eq!(wire[0], 0x81, "a final text frame starts here");
            let (len, head) = match wire[1] {
                126 => (u16::from_be_bytes([wire[2], wire[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            out.push(wire[head..head + len].to_vec());
            wire = &wire[head + len..];
        }
        out
    }

    #[tokio::test]
    async fn direct_writes_never_wait_and_what_a_full_socket_leaves_follows_intact() {
        let (socket, mut client) = pair().await;
        // Until tokio has seen the socket writable, a direct write takes nothing.
        socket.stream().writable().await.unwrap();

        // Frames of 64 KiB, each filled with its own letter, until the socket is full (the
        // client reads nothing meanwhile).
        let mut sent = Vec::new();
        let mut rest = None;
        for i in 0..1000usize {
            let body = vec![b'a' + (i % 26) as u8; 64 * 1024];
            let frame = Frame::from_json(Bytes::from(body.clone()));
            match socket.write_now(&Outgoing::Frame(frame)) {
                Written::All => sent.push(body),
                Written::Part(r) => {
                    sent.push(body);
                    rest = Some(r);
                    break;
                }
                Written::Nothing => break,
            }
        }
        assert!(
            sent.len() < 1000,
            "the socket filled up without any write waiting"
        );
        assert_eq!(
            socket.write_now(&Outgoing::Wire(Bytes::from_static(b"x"))),
            Written::Nothing,
            "a full socket takes nothing"
        );

        // The writer finishes a partly written frame; then everything arrives whole, in order.
        let reading = tokio::spawn(async move {
            let mut wire = Vec::new();
            client.read_to_end(&mut wire).await.unwrap();
            wire
        });
        if let Some(rest) = rest {
            socket.writer().write_all(&rest).await.unwrap();
        }
        let small = Frame::from_json(Bytes::from_static(b"{}"));
        loop {
            socket.stream().writable().await.unwrap();
            match socket.write_now(&Outgoing::Frame(small.clone())) {
                Written::All => break,
                Written::Part(r) => break socket.writer().write_all(&r).await.unwrap(),
                Written::Nothing => {}
            }
        }
        sent.push(b"{}".to_vec());
        drop(socket);
        assert_eq!(payloads(&reading.await.unwrap()), sent);
    }

    #[tokio::test]
    async fn progress_counts_what_the_peer_acknowledged() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let client = client.connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let mut client = client.unwrap();
        let (_read, write) = accepted.unwrap().0.into_split();
        let socket = Socket::new(write);
        socket.stream().writable().await.unwrap();

        // The client reads nothing: once its receive buffer is full, what the socket accepts
        // stays unacknowledged.
        let chunk = Frame::from_json(Bytes::from(vec![b'x'; 16 * 1024]));
        while socket.write_now(&Outgoing::Frame(chunk.clone())) == Written::All {}
        let stalled = socket.progress();
        assert!(stalled.written > 0);
        if cfg!(target_os = "linux") {
            assert!(
                stalled.unacknowledged > 0,
                "a peer that does not read leaves bytes unacknowledged: {stalled:?}"
            );
        }

        // It reads everything: all of it is acknowledged, soon.
        let written = stalled.written;
        let reading = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut read = 0u64;
            while read < written {
                read += client.read(&mut buf).await.unwrap() as u64;
            }
        });
        reading.await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while socket.progress().unacknowledged > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let read = socket.progress();
        assert_eq!(read.unacknowledged, 0, "{read:?}");
        assert!(read.written >= written);
    }
}
