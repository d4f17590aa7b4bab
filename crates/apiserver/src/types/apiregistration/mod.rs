//! The apiregistration.k8s.io API group (kube-aggregator's): one module per kind (its
//! strategy). The Local APIServices themselves are written by `housekeeping::apiservices`.

pub mod api_service;
