//! The hickory request handler: each question is answered from the zone (`records`) or relayed
//! to the host's resolvers (`forward`), and the reply is written back to the asking pod.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::forward;
use super::records::{self, ClusterView, Reply};

/// Answers within this size over UDP (the EDNS default of DNS Flag Day 2020).
const UDP_PAYLOAD: u16 = 1232;

pub struct ClusterDnsHandler<V> {
    pub view: V,
    pub upstreams: Arc<Vec<IpAddr>>,
}

#[async_trait::async_trait]
impl<V: ClusterView + Send + Sync + Unpin + 'static> RequestHandler for ClusterDnsHandler<V> {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(UDP_PAYLOAD);
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let info = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info,
            _ => {
                let code = if request.metadata.op_code == OpCode::Query {
                    ResponseCode::FormErr
                } else {
                    ResponseCode::NotImp
                };
                return send(
                    response_handle,
                    builder.error_msg(&request.metadata, code),
                    &request.metadata,
                )
                .await;
            }
        };
        let qname = info.query.name().to_string();
        let qtype = info.query.query_type();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        match records::lookup(&self.view, &qname, qtype) {
            Reply::Authoritative {
                code,
                answers,
                additionals,
            } => {
                metadata.authoritative = true;
                metadata.response_code = code;
                tracing::debug!(name = %qname, r#type = %qtype, code = %code, answers = answers.len(), "cluster DNS answer");
                let soa: Vec<Record> = if answers.is_empty() {
                    vec![records::soa()]
                } else {
                    Vec::new()
                };
                let response = builder.build(
                    metadata,
                    answers.iter(),
                    std::iter::empty(),
                    soa.iter(),
                    additionals.iter(),
                );
                send(response_handle, response, &request.metadata).await
            }
            Reply::Forward => {
                let tcp = request.protocol() == Protocol::Tcp;
                match forward::forward(&self.upstreams, request.as_slice(), tcp).await {
                    Ok(upstream) => {
                        metadata.response_code = upstream.metadata.response_code;
                        metadata.truncation = upstream.metadata.truncation;
                        metadata.authentic_data = upstream.metadata.authentic_data;
                        let response = builder.build(
                            metadata,
                            upstream.answers.iter(),
                            upstream.authorities.iter(),
                            std::iter::empty(),
                            upstream.additionals.iter(),
                        );
                        send(response_handle, response, &request.metadata).await
                    }
                    Err(e) => {
                        tracing::warn!(name = %qname, r#type = %qtype, error = %e, "forwarding a DNS question failed");
                        send(
                            response_handle,
                            builder.error_msg(&request.metadata, ResponseCode::ServFail),
                            &request.metadata,
                        )
                        .await
                    }
                }
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    mut handle: R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "sending a DNS answer failed");
            let mut metadata = Metadata::response_from_request(request);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_server::proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        }
    }
}
