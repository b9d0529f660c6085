//! Small socket helpers.

use std::io::IoSlice;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writes `a` then `b` with vectored writes until both are fully sent.
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    a: &[u8],
    b: &[u8],
) -> std::io::Result<()> {
    let mut bufs = [IoSlice::new(a), IoSlice::new(b)];
    let mut slices: &mut [IoSlice<'_>] = &mut bufs;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = w.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Socket buffer size for frame streams: several large frames in flight smooth out
/// scheduling hiccups without hiding a stalled peer for long.
pub const STREAM_SOCKET_BUFFER: usize = 4 << 20;

/// Sets `TCP_NODELAY` and the stream buffer sizes (best effort: the kernel may cap them).
pub fn tune_stream_socket(sock: &tokio::net::TcpStream) {
    let _ = sock.set_nodelay(true);
    let s = socket2::SockRef::from(sock);
    let _ = s.set_send_buffer_size(STREAM_SOCKET_BUFFER);
    let _ = s.set_recv_buffer_size(STREAM_SOCKET_BUFFER);
}

/// A byte stream to a peer: plain TCP or TLS over TCP.
pub trait Conn: tokio::io::AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// A boxed [`Conn`].
pub type BoxConn = Box<dyn Conn>;
