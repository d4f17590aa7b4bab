//! Which encoding a response is written in: upstream's negotiation over `Accept` — the
//! first entry the server can serve decides; protobuf only for built-in kinds.

use axum::http::StatusCode;

use crate::status::ApiError;
use crate::types::registry::ResourceType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// JSON (or YAML, or a Table: all written as JSON first).
    Json,
    Protobuf,
}

/// Whether a kind has a protobuf form: built-in kinds do, custom resources never.
pub fn has_protobuf(rt: &ResourceType) -> bool {
    rt.custom.is_none()
        && crate::encoding::protobuf_encode::message_for(&rt.api_version(), &rt.kind).is_some()
}

/// The encoding for a response to `accept`. A client that accepts only protobuf for a kind
/// without one (a custom resource) gets 406, as upstream's CRD handler answers.
pub fn output(accept: &str, protobuf_ok: bool) -> Result<Output, ApiError> {
    let mut asked_protobuf = false;
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        // Conversions (`as=Table`, `as=PartialObjectMetadata`) are written as JSON; the
        // Table negotiation decides whether they can be served at all.
        if parts.any(|p| p.starts_with("as=")) {
            return Ok(Output::Json);
        }
        match media.as_str() {
            crate::encoding::protobuf::CONTENT_TYPE if protobuf_ok => return Ok(Output::Protobuf),
            crate::encoding::protobuf::CONTENT_TYPE => asked_protobuf = true,
            "" | "*/*" | "application/*" | "application/json" | "application/yaml" => {
                return Ok(Output::Json)
            }
            _ => {}
        }
    }
    if asked_protobuf {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        ));
    }
    Ok(Output::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_GO: &str = "application/vnd.kubernetes.protobuf, application/json";

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
    fn protobuf_only_for_a_custom_resource_is_406() {
        let e = output("application/vnd.kubernetes.protobuf", false).unwrap_err();
        assert_eq!(e.code, StatusCode::NOT_ACCEPTABLE);
    }
}
