//! VolumeAttachment (storage.k8s.io, storage.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use crate::types::strategy::Strategy;

pub struct VolumeAttachment;

impl Strategy for VolumeAttachment {}
