//! What several kinds' strategies share: defaulting, validation and printing helpers
//! (pod specs are validated and defaulted once, for Pod, PodTemplate and every workload).

pub mod defaulting;
pub mod printing;
pub mod validating;
