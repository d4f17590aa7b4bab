//! gRPC probes: one `grpc.health.v1.Health/Check` call over HTTP/2 without TLS, as the
//! kubelet makes it, on a connection opened from inside the pod's network namespace.
//! The protocol is small enough to speak directly: a length-prefixed protobuf message each way.

use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// `grpc.health.v1.HealthCheckResponse.ServingStatus` names, by number.
const SERVING_STATUS: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];
/// gRPC status codes the kubelet words specially.
const UNIMPLEMENTED: u32 = 12;

/// Calls Check for `service` over `stream` (already connected); Ok when the answer is SERVING,
/// else the kubelet's wording of what went wrong.
pub async fn check(
    stream: TcpStream,
    authority: &str,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, call(stream, authority, service)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {timeout:?}"
        )),
    }
}

async fn call(stream: TcpStream, authority: &str, service: &str) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("error: health rpc probe failed: {e}");
    stream.set_nonblocking(true).map_err(|e| failed(&e))?;
    let stream = tokio::net::TcpStream::from_std(stream).map_err(|e| failed(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| failed(&e))?;
    let driver = tokio::spawn(conn);
    let request = Request::post(format!("http://{authority}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(Full::new(frame(&request_message(service))))
        .map_err(|e| failed(&e))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
        let status = response.status();
        // A "trailers-only" answer carries grpc-status among the headers.
        let header_status = grpc_status(response.headers());
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(&e))?;
        let trailer_status = collected.trailers().and_then(grpc_status);
        let (code, message) = header_status.or(trailer_status).unwrap_or((
            if status.is_success() { 0 } else { 2 },
            format!("HTTP status {status}"),
        ));
        if code == UNIMPLEMENTED {
            return Err(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
            ));
        }
        if code != 0 {
            return Err(format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {message}",
                code_name(code)
            ));
        }
        let serving = parse_status(&unframe(collected.to_bytes())?)?;
        if serving == 1 {
            Ok(())
        } else {
            let name = SERVING_STATUS
                .get(serving as usize)
                .copied()
                .unwrap_or("UNKNOWN");
            Err(format!("service unhealthy (responded with \"{name}\")"))
        }
    }
    .await;
    driver.abort();
    result
}

fn grpc_status(headers: &hyper::HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((code, message))
}

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(code as usize).copied().unwrap_or("Unknown")
}

/// `HealthCheckRequest { string service = 1; }` in protobuf's wire format.
fn request_message(service: &str) -> Vec<u8> {
    if service.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0x0a];
    put_varint(&mut out, service.len() as u64);
    out.extend_from_slice(service.as_bytes());
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&b, rest)) = buf.split_first() else {
            return Err("error: health rpc probe failed: truncated response".into());
        };
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("error: health rpc probe failed: malformed varint".into())
}

/// One uncompressed gRPC message: flag 0, big-endian length, the bytes.
fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

fn unframe(mut body: Bytes) -> Result<Vec<u8>, String> {
    if body.len() < 5 {
        return Err("error: health rpc probe failed: empty response".into());
    }
    if body.get_u8() != 0 {
        return Err("error: health rpc probe failed: compressed response".into());
    }
    let len = body.get_u32() as usize;
    if body.len() < len {
        return Err("error: health rpc probe failed: truncated response".into());
    }
    Ok(body[..len].to_vec())
}

/// `HealthCheckResponse { ServingStatus status = 1; }`: the status, 0 when absent.
fn parse_status(message: &[u8]) -> Result<u64, String> {
    let mut buf = message;
    let mut status = 0;
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut buf)?,
            (_, 0) => {
                get_varint(&mut buf)?;
            }
            (_, 2) => {
                let len = get_varint(&mut buf)? as usize;
                if buf.len() < len {
                    return Err("error: health rpc probe failed: truncated field".into());
                }
                buf = &buf[len..];
            }
            (_, 5) if buf.len() >= 4 => buf = &buf[4..],
            (_, 1) if buf.len() >= 8 => buf = &buf[8..],
            _ => return Err("error: health rpc probe failed: malformed response".into()),
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_the_wire_format() {
        assert_eq!(request_message(""), Vec::<u8>::new());
        assert_eq!(request_message("db"), vec![0x0a, 2, b'd', b'b']);
        let framed = frame(&[0x08, 0x01]);
        assert_eq!(&framed[..], &[0, 0, 0, 0, 2, 0x08, 0x01]);
        assert_eq!(unframe(framed).unwrap(), vec![0x08, 0x01]);
        assert_eq!(parse_status(&[0x08, 0x02]).unwrap(), 2);
        // Unknown fields are skipped; an empty message is UNKNOWN.
        assert_eq!(parse_status(&[0x12, 1, b'x', 0x08, 0x01]).unwrap(), 1);
        assert_eq!(parse_status(&[]).unwrap(), 0);
        assert!(parse_status(&[0x08]).is_err());
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
    }
}
