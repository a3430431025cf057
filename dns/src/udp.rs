//! The UDP query loop of one serving thread.
//!
//! hickory's `Server` reads a UDP socket on one task, spawns a task per query and sends every
//! answer back through a channel to the reading task. Here a query is parsed and handled
//! right where it was read, and the answer sent from there: one that can be answered at once
//! (cache hit, local zone, error) never becomes a task; only a query that waits on an
//! upstream is spawned. On a current-thread runtime that is the shortest path from the
//! datagram to the reply (see `bench/RESULTS.md`, DNS).
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{
    Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;

/// Largest datagram read; anything longer is truncated by the kernel and then fails to parse.
const MAX_QUERY: usize = 4096;

/// Serves queries from `sock` with `handler` until the socket fails for good.
pub async fn serve<H: RequestHandler>(
    sock: Arc<UdpSocket>,
    handler: Arc<H>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_QUERY];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier sends (ECONNREFUSED), a full queue: keep serving.
            Err(e) if transient(&e) => continue,
            Err(e) => return Err(e),
        };
        if !answerable(src) || n < 12 {
            continue;
        }
        let req = match Request::from_bytes(buf[..n].to_vec(), src, Protocol::Udp) {
            Ok(r) => r,
            Err(_) => {
                if let Some(reply) = format_error(&buf[..n]) {
                    let _ = sock.try_send_to(&reply, src);
                }
                continue;
            }
        };
        // Never answer answers (reflection loops).
        if req.metadata.message_type == MessageType::Response {
            continue;
        }
        let reply = UdpReply {
            sock: sock.clone(),
            dst: src,
        };
        let h = handler.clone();
        let mut query: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            h.handle_request::<_, TokioTime>(&req, reply).await;
        });
        // One poll here answers everything that does not wait; the rest continues as a task.
        let done = std::future::poll_fn(|cx| Poll::Ready(query.as_mut().poll(cx).is_ready())).await;
        if !done {
            tokio::spawn(query);
        }
    }
}

fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | WouldBlock | Interrupted
    ) || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Whether a reply to `src` can go anywhere (not port 0, not unspecified or broadcast).
fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            std::net::IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast(),
            std::net::IpAddr::V6(a) => !a.is_unspecified(),
        }
}

/// FORMERR for a query whose header reads but whose body does not: the header's ID, opcode
/// and RD, no sections. None for a datagram that is an answer or has no header.
fn format_error(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut r = query[..12].to_vec();
    r[2] = 0x80 | (query[2] & 0x79); // QR, opcode and RD from the query; AA, TC cleared
    r[3] = ResponseCode::FormErr.low();
    r[4..12].fill(0);
    Some(r)
}

/// Sends the encoded answer straight to the client's address.
#[derive(Clone)]
pub(crate) struct UdpReply {
    sock: Arc<UdpSocket>,
    dst: SocketAddr,
}

impl UdpReply {
    /// Sends a complete answer datagram as it is.
    pub(crate) async fn send_raw(&self, bytes: Vec<u8>) -> Result<ResponseInfo, NetError> {
        let header = Header::read(&mut BinDecoder::new(&bytes))
            .map_err(|e| NetError::from(e.to_string()))?;
        self.send(&bytes).await?;
        Ok(ResponseInfo::from(header))
    }

    async fn send(&self, bytes: &[u8]) -> Result<(), NetError> {
        match self.sock.try_send_to(bytes, self.dst) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.sock.send_to(bytes, self.dst).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // At most the client's EDNS payload size, 512 bytes without EDNS (RFC 1035 4.2.1;
        // what does not fit is cut and marked truncated by the encoder). A response that
        // cannot be encoded becomes a bare SERVFAIL.
        let max = response
            .edns()
            .map(|e| e.max_payload().max(512))
            .unwrap_or(512);
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        if let Ok(info) = response.destructive_emit(&mut encoder) {
            self.send(&bytes).await?;
            return Ok(info);
        }
        let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
        metadata.response_code = ResponseCode::ServFail;
        let header = Header {
            metadata,
            counts: HeaderCounts::default(),
        };
        bytes.clear();
        let mut encoder = BinEncoder::new(&mut bytes);
        let _ = header.emit(&mut encoder);
        self.send(&bytes).await?;
        Ok(ResponseInfo::from(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_error_keeps_id_opcode_and_rd() {
        // ID 0xbeef, opcode 0 with RD, one question claimed but no body.
        let q = [0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        let r = format_error(&q).unwrap();
        assert_eq!(&r[..2], &[0xbe, 0xef]);
        assert_eq!(r[2], 0x81, "QR + RD");
        assert_eq!(r[3] & 0x0f, 1, "FORMERR");
        assert!(r[4..].iter().all(|&b| b == 0), "no sections");
        // An answer is never answered.
        assert!(format_error(&[0, 1, 0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
    }

    #[test]
    fn no_reply_to_unanswerable_sources() {
        assert!(!answerable("0.0.0.0:53".parse().unwrap()));
        assert!(!answerable("255.255.255.255:53".parse().unwrap()));
        assert!(!answerable("10.0.0.1:0".parse().unwrap()));
        assert!(answerable("10.0.0.1:5353".parse().unwrap()));
    }
}
