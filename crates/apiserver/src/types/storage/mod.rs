//! The storage.k8s.io API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod c_s_i_driver;
pub mod c_s_i_node;
pub mod storage_class;
pub mod volume_attachment;
