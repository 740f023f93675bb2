//! The writing half of a connection's socket, shared by its writer task and its outbox.
//!
//! The outbox uses it for direct writes ([`WriteNow`]): a producer that finds the queue empty
//! and the writer idle writes the frame itself, without waiting. The writer task writes
//! through [`Socket::writer`] and is the only one that ever waits for the socket. The outbox
//! keeps the two apart (see `Outbox::take_batch` and `Outbox::written`).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use super::framing::{MAX_HEADER, text_header_into};
use crate::outbox::{Outgoing, WriteNow, Written};

/// One connection's write half. Dropping the last reference shuts the write side down.
pub struct Socket(OwnedWriteHalf);

impl Socket {
    pub fn new(half: OwnedWriteHalf) -> Socket {
        Socket(half)
    }

    /// The writer task's view: an [`AsyncWrite`] that waits for the socket when it is full.
    pub fn writer(&self) -> SocketWriter<'_> {
        SocketWriter(self.0.as_ref())
    }
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
        match self
            .0
            .as_ref()
            .try_write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
        {
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
pub struct SocketWriter<'a>(&'a TcpStream);

impl SocketWriter<'_> {
    fn poll_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match write(self.0) {
                // tokio cleared the readiness: wait for the next writable event.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
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
        socket.0.writable().await.unwrap();

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
            socket.0.writable().await.unwrap();
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
}
