//! Which encoding and form a response is written in: upstream's negotiation over `Accept`
//! (the first entry the server can serve decides; protobuf only for built-in kinds; Tables).

use std::collections::HashMap;

use axum::http::StatusCode;

use crate::status::ApiError;
use crate::types::registry::ResourceType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// JSON (or YAML, or a Table: all written as JSON first).
    Json,
    Protobuf,
}

/// The outcome of negotiation: the encoding, the Table apiVersion when a Table was asked,
/// and whether only metadata was (PartialObjectMetadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub output: Output,
    pub table: Option<&'static str>,
    pub metadata: bool,
}

pub const TABLE_V1: &str = "meta.k8s.io/v1";
pub const TABLE_V1BETA1: &str = "meta.k8s.io/v1beta1";

/// What one Accept entry asks for.
#[derive(Debug, PartialEq)]
enum Wanted {
    /// The object itself: JSON, YAML or a wildcard, or protobuf.
    Plain { protobuf: bool },
    /// A metadata-only conversion: PartialObjectMetadata(List) in JSON.
    Metadata,
    /// A Table of this apiVersion (written as JSON).
    Table(&'static str),
    /// A conversion (`as=`) this server cannot make, or a media type it does not write.
    Unservable { transform: bool },
}

fn read_entry(entry: &str) -> Wanted {
    let mut parts = entry.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    let mut params = HashMap::new();
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            params.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let protobuf = media == crate::encoding::protobuf::CONTENT_TYPE;
    let plain_media = protobuf
        || matches!(
            media.as_str(),
            "" | "*/*" | "application/*" | "application/json" | "application/yaml"
        );
    let Some(as_kind) = params.get("as") else {
        return if plain_media {
            Wanted::Plain { protobuf }
        } else {
            Wanted::Unservable { transform: false }
        };
    };
    let g = params.get("g").map(String::as_str).unwrap_or("");
    let v = params.get("v").map(String::as_str).unwrap_or("");
    match (as_kind.as_str(), g, v) {
        ("Table", "meta.k8s.io", "v1") if plain_media => Wanted::Table(TABLE_V1),
        ("Table", "meta.k8s.io", "v1beta1") if plain_media => Wanted::Table(TABLE_V1BETA1),
        ("PartialObjectMetadata" | "PartialObjectMetadataList", "meta.k8s.io", _) => {
            Wanted::Metadata
        }
        _ => Wanted::Unservable { transform: true },
    }
}

/// Whether a kind has a protobuf form: built-in kinds do, custom resources never.
pub fn has_protobuf(rt: &ResourceType) -> bool {
    rt.custom.is_none()
        && crate::encoding::protobuf_encode::message_for(&rt.api_version(), &rt.kind).is_some()
}

/// Upstream's output negotiation, once per request: the first Accept entry the server can
/// serve decides (protobuf only when `protobuf_ok`, i.e. for built-in kinds). A client that
/// asked only for conversions this server cannot make gets 406, as does one that accepts only
/// protobuf for a kind without it (a custom resource), as upstream's CRD handler answers.
pub fn negotiate(accept: &str, protobuf_ok: bool) -> Result<Negotiated, ApiError> {
    let json = |table, metadata| {
        Ok(Negotiated {
            output: Output::Json,
            table,
            metadata,
        })
    };
    let (mut asked_transform, mut asked_protobuf) = (false, false);
    for entry in accept.split(',') {
        match read_entry(entry) {
            Wanted::Plain { protobuf: true } if protobuf_ok => {
                return Ok(Negotiated {
                    output: Output::Protobuf,
                    table: None,
                    metadata: false,
                })
            }
            Wanted::Plain { protobuf: true } => asked_protobuf = true,
            Wanted::Plain { protobuf: false } => return json(None, false),
            Wanted::Metadata => return json(None, true),
            Wanted::Table(v) => return json(Some(v), false),
            Wanted::Unservable { transform } => asked_transform |= transform,
        }
    }
    if asked_transform {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ));
    }
    if asked_protobuf {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        ));
    }
    // Only media types this server does not write (`text/html`): JSON, as always.
    json(None, false)
}

/// The encoding for a response to `accept` (see [`negotiate`]).
pub fn output(accept: &str, protobuf_ok: bool) -> Result<Output, ApiError> {
    negotiate(accept, protobuf_ok).map(|n| n.output)
}

/// Whether the entry that decides (the first servable one) asks for metadata only
/// (`as=PartialObjectMetadata`, what metadata informers such as the garbage collector's
/// send): the object is then answered as PartialObjectMetadata, a list as its List.
pub fn metadata_only(accept: &str) -> bool {
    negotiate(accept, true).is_ok_and(|n| n.metadata)
}

/// `obj` as PartialObjectMetadata: its metadata under meta.k8s.io/v1's kind.
pub fn partial_metadata(obj: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
    })
}

/// The Table apiVersion the Accept header asks for, if it asks for a Table.
pub fn table_version(accept: &str) -> Option<&'static str> {
    negotiate(accept, true).ok().and_then(|n| n.table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_GO: &str = "application/vnd.kubernetes.protobuf, application/json";

    #[test]
    fn metadata_only_when_the_deciding_entry_asks_for_it() {
        let meta = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
        assert!(metadata_only(meta));
        assert!(metadata_only(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
        ));
        assert!(!metadata_only(CLIENT_GO));
        assert!(!metadata_only(
            "application/json, application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
        ));
        let obj = serde_json::json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "a", "uid": "u"}, "spec": {"containers": []}});
        assert_eq!(
            partial_metadata(&obj),
            serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "a", "uid": "u"}})
        );
    }

    #[test]
    fn the_first_servable_entry_decides() {
        assert_eq!(output(CLIENT_GO, true).unwrap(), Output::Protobuf);
        assert_eq!(output(CLIENT_GO, false).unwrap(), Output::Json);
        assert_eq!(
            output(
                "application/json, application/vnd.kubernetes.protobuf",
                true
            )
            .unwrap(),
            Output::Json
        );
        assert_eq!(
            output("application/vnd.kubernetes.protobuf", true).unwrap(),
            Output::Protobuf
        );
        assert_eq!(output("", true).unwrap(), Output::Json);
        assert_eq!(output("text/html", true).unwrap(), Output::Json);
        assert_eq!(
            output(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
                true
            )
            .unwrap(),
            Output::Json
        );
        assert_eq!(
            output("application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json", true).unwrap(),
            Output::Json
        );
    }

    #[test]
    fn an_unservable_conversion_gives_way_to_the_next_entry() {
        let n = negotiate(
            "application/json;as=Foo;g=x.io;v=v1, application/vnd.kubernetes.protobuf",
            true,
        )
        .unwrap();
        assert_eq!(n.output, Output::Protobuf);
        let n = negotiate("application/json;as=Table;v=v1;g=meta.k8s.io", true).unwrap();
        assert_eq!((n.output, n.table), (Output::Json, Some(TABLE_V1)));
        let e = negotiate("application/json;as=Foo;g=x.io;v=v1", true).unwrap_err();
        assert_eq!(e.code, StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn protobuf_only_for_a_custom_resource_is_406() {
        let e = output("application/vnd.kubernetes.protobuf", false).unwrap_err();
        assert_eq!(e.code, StatusCode::NOT_ACCEPTABLE);
    }
}
