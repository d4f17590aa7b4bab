//! PersistentVolume (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct PersistentVolume;

impl Strategy for PersistentVolume {
    fn defaults(&self, obj: &mut Value, creating: bool) {
        use crate::types::shared::defaulting::*;
        let spec = child(obj, "spec");
        default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        default(spec, "volumeMode", json!("Filesystem"));
        if creating {
            obj["status"] = json!({"phase": "Pending"});
        }
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        if obj.pointer("/spec/capacity/storage").is_none() {
            c.required("spec.capacity", "");
        }
        if arr(obj, "/spec/accessModes").is_empty() {
            c.required("spec.accessModes", "");
        }
        access_modes(&mut c, obj);
        let sources = [
            "hostPath",
            "nfs",
            "local",
            "csi",
            "iscsi",
            "fc",
            "rbd",
            "cephfs",
            "cinder",
            "azureDisk",
            "azureFile",
            "gcePersistentDisk",
            "awsElasticBlockStore",
            "glusterfs",
            "vsphereVolume",
            "portworxVolume",
            "scaleIO",
            "storageos",
            "flexVolume",
            "flocker",
            "quobyte",
            "photonPersistentDisk",
        ];
        if !sources
            .iter()
            .any(|x| obj.pointer(&format!("/spec/{x}")).is_some())
        {
            c.required("spec", "must specify a volume type");
        }
        c.one_of(
            obj,
            "/spec/persistentVolumeReclaimPolicy",
            "spec.persistentVolumeReclaimPolicy",
            &["Delete", "Recycle", "Retain"],
            false,
        );
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let claim = match (
            s(o, "/spec/claimRef/namespace"),
            s(o, "/spec/claimRef/name"),
        ) {
            ("", "") => String::new(),
            (ns, n) => format!("{ns}/{n}"),
        };
        out.extend([
            json!(s(o, "/spec/capacity/storage")),
            json!(access_modes(arr(o, "/spec/accessModes"))),
            json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
            json!(s(o, "/status/phase")),
            json!(claim),
            json!(s(o, "/spec/storageClassName")),
            or_none(s(o, "/spec/volumeAttributesClassName").to_string()),
            json!(s(o, "/status/reason")),
            age(o),
            json!(s(o, "/spec/volumeMode")),
        ]);
        Some(out)
    }
}
