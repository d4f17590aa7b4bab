//! The controllers' view of the cluster CA: the API server's CSR parser and signer behind
//! the controllers' `CertificateAuthority` trait (the controllers crate holds no crypto).

use std::sync::Arc;
use std::time::Duration;

use capstan_apiserver::serving::csr_signer::CaSigner;
use capstan_apiserver::types::certificates::request;
use capstan_controllers::certificates::{Ca, CertificateAuthority, RequestSubject};

struct ClusterSigner(CaSigner);

impl CertificateAuthority for ClusterSigner {
    fn inspect(&self, request_pem: &[u8]) -> Result<RequestSubject, String> {
        let r = request::parse(request_pem).map_err(|e| e.to_string())?;
        Ok(RequestSubject {
            common_name: r.common_name,
            organizations: r.organizations,
            dns_names: r.dns_names,
            email_addresses: r.email_addresses,
            ip_addresses: r.ip_addresses.iter().map(|ip| ip.to_string()).collect(),
            uris: r.uris,
        })
    }

    fn sign(
        &self,
        request_pem: &[u8],
        usages: &[String],
        lifetime: Duration,
    ) -> Result<String, String> {
        self.0
            .sign(request_pem, usages, lifetime)
            .map_err(|e| e.to_string())
    }
}

/// The CA (certificate and key, PEM) as the controllers take it.
pub fn ca(cert_pem: &str, key_pem: &str) -> anyhow::Result<Ca> {
    let signer = CaSigner::new(cert_pem, key_pem)?;
    Ok(Ca(Arc::new(ClusterSigner(signer))))
}
