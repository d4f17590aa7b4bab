//! upstream's ValidateKubeletClientCSR and ValidateKubeletServingCSR: what a node's client
//! and serving certificate requests must look like, in upstream's words.

use super::RequestSubject;

const NODE_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";

/// The usage sets upstream accepts (with and without `key encipherment`, for non-RSA keys).
const CLIENT_USAGES: &[&str] = &["client auth", "digital signature", "key encipherment"];
const SERVING_USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];

/// Whether `usages` is exactly `full`, or `full` without `key encipherment`.
fn usages_match(usages: &[String], full: &[&str]) -> bool {
    let mut got: Vec<&str> = usages.iter().map(String::as_str).collect();
    got.sort_unstable();
    got.dedup();
    let without: Vec<&str> = full
        .iter()
        .copied()
        .filter(|u| *u != "key encipherment")
        .collect();
    got == full || got == without
}

fn usages_error(full: &[&str]) -> String {
    format!("usages did not match [{}]", full.join(" "))
}

fn organization(req: &RequestSubject) -> Result<(), String> {
    if req.organizations != [NODES_GROUP] {
        return Err("subject organization is not system:nodes".into());
    }
    Ok(())
}

fn common_name(req: &RequestSubject) -> Result<(), String> {
    if !req.common_name.starts_with(NODE_PREFIX) {
        return Err("subject common name does not begin with system:node:".into());
    }
    Ok(())
}

/// A kubelet's client certificate request: `system:node:<name>` in `system:nodes`, no SANs.
pub fn validate_client(req: &RequestSubject, usages: &[String]) -> Result<(), String> {
    organization(req)?;
    if !req.dns_names.is_empty() {
        return Err("DNS subjectAltNames are not allowed".into());
    }
    if !req.email_addresses.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.ip_addresses.is_empty() {
        return Err("IP subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    common_name(req)?;
    if !usages_match(usages, CLIENT_USAGES) {
        return Err(usages_error(CLIENT_USAGES));
    }
    Ok(())
}

/// A kubelet's serving certificate request: in `system:nodes`, DNS or IP SANs only.
pub fn validate_serving(req: &RequestSubject, usages: &[String]) -> Result<(), String> {
    organization(req)?;
    if req.dns_names.is_empty() && req.ip_addresses.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    if !req.email_addresses.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    if !usages_match(usages, SERVING_USAGES) {
        return Err(usages_error(SERVING_USAGES));
    }
    common_name(req)
}

/// The kube-apiserver-client signer's usages: client auth, optionally digital signature and
/// key encipherment.
pub fn validate_apiserver_client_usages(usages: &[String]) -> Result<(), String> {
    for u in usages {
        if !CLIENT_USAGES.contains(&u.as_str()) {
            return Err(format!("invalid usage for client certificate: {u}"));
        }
    }
    if !usages.iter().any(|u| u == "client auth") {
        return Err("missing required usage for client certificate: client auth".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cn: &str, orgs: &[&str]) -> RequestSubject {
        RequestSubject {
            common_name: cn.into(),
            organizations: orgs.iter().map(|o| o.to_string()).collect(),
            ..RequestSubject::default()
        }
    }

    fn u(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubelet_client_requests_are_checked_as_upstream() {
        let ok = node("system:node:n1", &["system:nodes"]);
        assert_eq!(
            validate_client(&ok, &u(&["digital signature", "client auth"])),
            Ok(())
        );
        assert_eq!(
            validate_client(
                &ok,
                &u(&["key encipherment", "digital signature", "client auth"])
            ),
            Ok(())
        );
        assert_eq!(
            validate_client(&ok, &u(&["client auth", "server auth"])),
            Err("usages did not match [client auth digital signature key encipherment]".into())
        );
        assert_eq!(
            validate_client(&node("alice", &["system:nodes"]), &u(&["client auth"])),
            Err("subject common name does not begin with system:node:".into())
        );
        assert_eq!(
            validate_client(&node("system:node:n1", &["dev"]), &u(&["client auth"])),
            Err("subject organization is not system:nodes".into())
        );
        let mut with_dns = ok.clone();
        with_dns.dns_names.push("n1".into());
        assert_eq!(
            validate_client(&with_dns, &u(&["client auth"])),
            Err("DNS subjectAltNames are not allowed".into())
        );
        assert_eq!(
            validate_serving(&ok, &u(&["digital signature", "server auth"])),
            Err("DNS or IP subjectAltName is required".into())
        );
        assert_eq!(
            validate_serving(&with_dns, &u(&["digital signature", "server auth"])),
            Ok(())
        );
    }
}
