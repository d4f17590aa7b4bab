//! Names outside the cluster domain: the question is relayed as it came (same bytes, same id)
//! to the host's resolvers from /etc/resolv.conf, over the protocol the pod asked with.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// One upstream's time to answer before the next is tried (glibc's resolv.conf default).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver in the host's resolv.conf")]
    NoUpstream,
    #[error("upstream {upstream}: {source}")]
    Io {
        upstream: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {0} did not answer within {UPSTREAM_TIMEOUT:?}")]
    Timeout(SocketAddr),
    #[error("upstream {upstream} sent an unreadable answer: {reason}")]
    Malformed {
        upstream: SocketAddr,
        reason: String,
    },
}

/// Relays `query` (wire bytes) to the upstreams in order until one answers.
pub async fn forward(
    upstreams: &[IpAddr],
    query: &[u8],
    tcp: bool,
) -> Result<Message, ForwardError> {
    let mut last = ForwardError::NoUpstream;
    for ip in upstreams {
        let upstream = SocketAddr::new(*ip, 53);
        let attempt = if tcp {
            tokio::time::timeout(UPSTREAM_TIMEOUT, over_tcp(upstream, query)).await
        } else {
            tokio::time::timeout(UPSTREAM_TIMEOUT, over_udp(upstream, query)).await
        };
        let bytes = match attempt {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(source)) => {
                last = ForwardError::Io { upstream, source };
                continue;
            }
            Err(_) => {
                last = ForwardError::Timeout(upstream);
                continue;
            }
        };
        return Message::from_vec(&bytes).map_err(|e| ForwardError::Malformed {
            upstream,
            reason: e.to_string(),
        });
    }
    Err(last)
}

async fn over_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: only the upstream's datagrams are received.
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let n = socket.recv(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

async fn over_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let answer_len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(answer_len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}
