//! What a request asks for, read the way kube-apiserver's RequestInfoFactory reads it:
//! the decoded path, then verb, API group, namespace, resource, subresource and name. The
//! authorizer's refusal is worded from it, so a client sees upstream's 403 message.

use crate::status::ApiError;

/// Decode `%XX` escapes in a request path, as Go's `url.URL.Path` is decoded before
/// kube-apiserver routes on it (`/configmaps/my%2Dcm` names `my-cm`). A malformed escape is
/// a 400, as Go's server refuses such a request line.
pub fn decode_path(raw: &str) -> Result<String, ApiError> {
    if !raw.contains('%') {
        return Ok(raw.to_string());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            let h = std::str::from_utf8(h).ok()?;
            u8::from_str_radix(h, 16).ok()
        });
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                let bad: String = raw[i..].chars().take(3).collect();
                return Err(ApiError::bad_request(format!("invalid URL escape {bad:?}")));
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub resource_request: bool,
    pub path: String,
    pub verb: String,
    pub api_group: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Whether a `watch` query value turns a list into a watch (upstream treats anything but
/// "false"/"0" as true once the parameter is present).
fn watch_flag(v: &str) -> bool {
    !matches!(v.to_ascii_lowercase().as_str(), "false" | "0")
}

impl RequestInfo {
    /// `path` is the decoded path; `query` the request's query parameters.
    pub fn new(
        method: &str,
        path: &str,
        query: &std::collections::HashMap<String, String>,
    ) -> RequestInfo {
        let mut info = RequestInfo {
            resource_request: false,
            path: path.to_string(),
            verb: method.to_ascii_lowercase(),
            ..RequestInfo::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if parts.len() < 3 {
            return info;
        }
        let mut rest: &[&str] = match parts[0] {
            "api" => &parts[1..],
            "apis" if parts.len() >= 4 => {
                info.api_group = parts[1].to_string();
                &parts[2..]
            }
            _ => return info,
        };
        info.resource_request = true;
        rest = &rest[1..]; // the version
        if matches!(rest.first(), Some(&"watch") | Some(&"proxy")) && rest.len() >= 2 {
            info.verb = rest[0].to_string();
            rest = &rest[1..];
        } else {
            info.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_string();
        }
        if rest.first() == Some(&"namespaces") {
            if let Some(ns) = rest.get(1) {
                info.namespace = ns.to_string();
                // `/namespaces/{ns}/status` and `/finalize` are the namespace's own
                // subresources; anything else after the name is a namespaced resource.
                if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                    rest = &rest[2..];
                }
            }
        }
        if rest.len() >= 3 && info.verb != "proxy" {
            info.subresource = rest[2].to_string();
        }
        if rest.len() >= 2 {
            info.name = rest[1].to_string();
        }
        if let Some(r) = rest.first() {
            info.resource = r.to_string();
        }
        if info.name.is_empty() && info.verb == "get" {
            let watching = query.get("watch").is_some_and(|v| watch_flag(v));
            info.verb = if watching { "watch" } else { "list" }.to_string();
            // A list pinned to one name by field selector is authorized as that name.
            if let Some(name) = query.get("fieldSelector").and_then(|s| pinned_name(s)) {
                info.name = name;
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_string();
        }
        info
    }

    /// The authorizer's refusal for the anonymous user (no authorizer reason: RBAC gives
    /// none when no rule matched).
    pub fn anonymous_forbidden(&self) -> ApiError {
        crate::serving::forbidden::forbidden(self, "system:anonymous", "")
    }
}

/// `metadata.name=x` (or `==`) in a field selector, when it is a valid path segment.
fn pinned_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (field.trim() == "metadata.name")
            .then(|| value.trim().to_string())
            .filter(|v| crate::types::validation::path_segment_errors(v).is_empty())
    })
}

/// Go's `time.ParseDuration`, for the `timeout` query parameter: `[-+]?([0-9]*(\.[0-9]*)?unit)+`
/// with units ns, us (µs, μs), ms, s, m, h, or a bare `0`. Errors carry Go's wording.
pub fn parse_go_duration(orig: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = orig;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: f64 = 0.0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_part, rest) = s.split_at(int_len);
        s = rest;
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {orig:?}"));
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let number: f64 = format!(
            "{}.{}",
            if int_part.is_empty() { "0" } else { int_part },
            if frac_part.is_empty() { "0" } else { frac_part }
        )
        .parse()
        .map_err(|_| invalid())?;
        total_nanos += number * scale;
        // Go's Duration is an int64 of nanoseconds.
        if total_nanos > i64::MAX as f64 {
            return Err(invalid());
        }
    }
    if negative {
        // A negative timeout parses; it only means "no deadline" to the server.
        return Ok(std::time::Duration::ZERO);
    }
    Ok(std::time::Duration::from_nanos(total_nanos as u64))
}

/// Upstream's WithRequestDeadline: a `timeout` that Go cannot parse is a 400 before
/// anything else looks at the request.
pub fn check_timeout_param(query: Option<&str>) -> Result<(), ApiError> {
    let Some(query) = query else { return Ok(()) };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "timeout" {
            continue;
        }
        let v = decode_query_value(v);
        if v.is_empty() {
            continue;
        }
        if let Err(e) = parse_go_duration(&v) {
            return Err(ApiError::bad_request(format!(
                "invalid timeout specified in the request URL - {e}"
            )));
        }
        // Go's Query().Get reads the first value only.
        return Ok(());
    }
    Ok(())
}

/// A query value with `+` as space and `%XX` escapes decoded (lossy on bad escapes, as the
/// value only has to be judged, not kept).
fn decode_query_value(v: &str) -> String {
    let v = v.replace('+', " ");
    decode_path(&v).unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn info(method: &str, path: &str, query: &[(&str, &str)]) -> RequestInfo {
        let q: HashMap<String, String> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RequestInfo::new(method, path, &q)
    }

    #[test]
    fn decodes_escapes_and_refuses_malformed_ones() {
        assert_eq!(decode_path("/a/my%2Dcm").unwrap(), "/a/my-cm");
        assert_eq!(decode_path("/plain").unwrap(), "/plain");
        assert_eq!(decode_path("/%e2%9c%93").unwrap(), "/\u{2713}");
        assert_eq!(decode_path("/bad%zz").unwrap_err().code.as_u16(), 400);
        assert!(decode_path("/trailing%2").is_err());
    }

    #[test]
    fn reads_verbs_and_scopes_as_upstream() {
        let i = info("GET", "/api/v1/namespaces", &[]);
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str()),
            ("list", "namespaces")
        );
        let i = info("GET", "/api/v1/namespaces/ns/configmaps/a", &[]);
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.name.as_str()),
            ("get", "ns", "a")
        );
        let i = info("GET", "/apis/apps/v1/deployments", &[("watch", "1")]);
        assert_eq!((i.verb.as_str(), i.api_group.as_str()), ("watch", "apps"));
        let i = info("DELETE", "/api/v1/namespaces/ns/pods", &[]);
        assert_eq!(i.verb, "deletecollection");
        let i = info("PUT", "/api/v1/namespaces/ns/status", &[]);
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("namespaces", "ns", "status")
        );
        let i = info("GET", "/apis/apps/v1", &[]);
        assert!(!i.resource_request);
    }

    #[test]
    fn durations_parse_as_go_does() {
        use std::time::Duration;
        assert_eq!(parse_go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_go_duration("invalid").unwrap_err(),
            "time: invalid duration \"invalid\""
        );
        assert_eq!(
            parse_go_duration("10").unwrap_err(),
            "time: missing unit in duration \"10\""
        );
        assert_eq!(
            parse_go_duration("3x").unwrap_err(),
            "time: unknown unit \"x\" in duration \"3x\""
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration(".s").is_err());
        let e = check_timeout_param(Some("a=b&timeout=invalid")).unwrap_err();
        assert_eq!(e.code.as_u16(), 400);
        assert_eq!(
            e.message,
            "invalid timeout specified in the request URL - time: invalid duration \"invalid\""
        );
        assert!(check_timeout_param(Some("timeout=30s")).is_ok());
        assert!(check_timeout_param(None).is_ok());
    }

    #[test]
    fn anonymous_refusals_match_upstream_wording() {
        let e = info("GET", "/api/v1/namespaces", &[]).anonymous_forbidden();
        assert_eq!(e.message, "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope");
        let e = info("GET", "/apis/apps/v1/namespaces/x/deployments/d", &[]).anonymous_forbidden();
        assert_eq!(e.message, "deployments.apps \"d\" is forbidden: User \"system:anonymous\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"x\"");
        let e = info("GET", "/apis", &[]).anonymous_forbidden();
        assert_eq!(
            e.message,
            "forbidden: User \"system:anonymous\" cannot get path \"/apis\""
        );
    }
}
