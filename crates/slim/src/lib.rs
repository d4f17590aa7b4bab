//! Objects as in-process watchers decode them: without `metadata.managedFields`, which none
//! of them reads (the scheduler, the simulator, the garbage collector, the controllers).
//!
//! Why: every write to a pod adds to its managedFields, and k8s-openapi decodes each entry's
//! `fieldsV1` into a tree of `serde_json::Value`s — in the 30,000-pod bench that was 5.6 % of
//! the server's CPU. The shared watcher (`watch`) cuts the entries out of an object's text;
//! `Slim<K>`, for typed `Api<Slim<K>>` watches, wraps the JSON decoder so they are skipped
//! (as unknown fields are), never built. Everything else decodes exactly as `K` does.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use kube::api::ObjectMeta;
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde::Deserialize;

mod controller;
mod watch;
pub use controller::{Action, Controller};
pub use watch::{controller, touched, watch, watcher, RawObject, WatchApi};

/// `T` from `v` (a JSON value, or any serialisable object of the same shape), read from
/// its JSON text.
///
/// Why: serde compiles a type's decoder once per kind of input. The in-process client reads
/// every response from text, so a conversion through text reuses that decoder, where
/// `serde_json::from_value` would add a second copy of the type's whole tree to the binary
/// (a Pod's, a Node's or a PersistentVolume's: 50-150 KB each). It costs one
/// serialisation, off every hot path.
pub fn from_json<T: serde::de::DeserializeOwned>(
    v: &impl serde::Serialize,
) -> Result<T, serde_json::Error> {
    serde_json::from_str(&serde_json::to_string(v)?)
}

/// `K`, decoded with `metadata.managedFields` skipped (the field is left empty).
#[derive(Clone, Debug, PartialEq)]
pub struct Slim<K>(pub K);

impl<K> Slim<K> {
    pub fn into_inner(self) -> K {
        self.0
    }
}

impl<'de, K: Deserialize<'de>> Deserialize<'de> for Slim<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::deserialize(Wrapped {
            inner: d,
            level: Object,
        })
        .map(Slim)
    }
}

impl<K: kube::Resource> kube::Resource for Slim<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// Where in the object the decoder is: the object itself (whose `metadata` is slimmed), or
/// its metadata (whose `managedFields` are skipped). A type, not a value: the object level's
/// map hands `metadata` on at the metadata level, and were the level a value, that branch
/// would be compiled for every field's type, and recursively for the whole tree of types
/// below (a second copy of each decoder, ~0.3 MB of the binary). As a type, below the
/// metadata level everything decodes through the plain decoders.
trait Level: Copy {
    fn visit_map<'de, V: Visitor<'de>, A: MapAccess<'de>>(
        self,
        v: V,
        map: A,
    ) -> Result<V::Value, A::Error>;
}

#[derive(Clone, Copy)]
struct Object;

#[derive(Clone, Copy)]
struct Meta;

impl Level for Object {
    fn visit_map<'de, V: Visitor<'de>, A: MapAccess<'de>>(
        self,
        v: V,
        map: A,
    ) -> Result<V::Value, A::Error> {
        v.visit_map(ObjectMap {
            inner: map,
            next_is_meta: false,
        })
    }
}

impl Level for Meta {
    fn visit_map<'de, V: Visitor<'de>, A: MapAccess<'de>>(
        self,
        v: V,
        map: A,
    ) -> Result<V::Value, A::Error> {
        v.visit_map(MetaMap { inner: map })
    }
}

/// A decoder that hands maps to its level's map (`ObjectMap`, `MetaMap`); all else passes
/// straight through.
struct Wrapped<D, L> {
    inner: D,
    level: L,
}

macro_rules! pass_through {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
            self.inner.$method(v)
        })*
    };
}

impl<'de, D: Deserializer<'de>, L: Level> Deserializer<'de> for Wrapped<D, L> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(SlimVisitor {
            inner: v,
            level: self.level,
        })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(SlimVisitor {
            inner: v,
            level: self.level,
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(
            name,
            fields,
            SlimVisitor {
                inner: v,
                level: self.level,
            },
        )
    }
    // k8s-openapi decodes `metadata` as an `Option` first: the level carries through it.
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_option(SlimVisitor {
            inner: v,
            level: self.level,
        })
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_newtype_struct(
            name,
            SlimVisitor {
                inner: v,
                level: self.level,
            },
        )
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(name, v)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple(len, v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple_struct(name, len, v)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(name, variants, v)
    }
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }

    pass_through! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
        deserialize_f64 deserialize_char deserialize_str deserialize_string deserialize_bytes
        deserialize_byte_buf deserialize_unit deserialize_seq
        deserialize_identifier deserialize_ignored_any deserialize_i128 deserialize_u128
    }
}

/// The visitor at a slimmed level: a map it sees through its level's map, an `Option`'s or a
/// newtype's content at the same level.
struct SlimVisitor<V, L> {
    inner: V,
    level: L,
}

impl<'de, V: Visitor<'de>, L: Level> Visitor<'de> for SlimVisitor<V, L> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.level.visit_map(self.inner, map)
    }
    // Anything but a map is the inner visitor's business (it accepts or rejects it).
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(seq)
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Wrapped {
            inner: d,
            level: self.level,
        })
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Wrapped {
            inner: d,
            level: self.level,
        })
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.inner.visit_bool(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.inner.visit_i64(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.inner.visit_u64(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.inner.visit_f64(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.inner.visit_str(v)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.inner.visit_borrowed_str(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.inner.visit_string(v)
    }
}

/// The object's map: it reads the keys first, and decodes `metadata`'s value at the metadata
/// level; every other value decodes as it would unwrapped.
struct ObjectMap<A> {
    inner: A,
    next_is_meta: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ObjectMap<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let Some(key) = self.inner.next_key::<Key<'de>>()? else {
            return Ok(None);
        };
        self.next_is_meta = key.as_str() == "metadata";
        key.into_seed(seed).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        if std::mem::take(&mut self.next_is_meta) {
            self.inner.next_value_seed(MetaSeed(seed))
        } else {
            self.inner.next_value_seed(seed)
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// The metadata's map: `managedFields` is skipped (as an unknown field is); every other
/// value decodes as it would unwrapped.
struct MetaMap<A> {
    inner: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for MetaMap<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        loop {
            let Some(key) = self.inner.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            if key.as_str() == "managedFields" {
                self.inner.next_value::<IgnoredAny>()?;
                continue;
            }
            return key.into_seed(seed).map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// The seed of `metadata`'s value: decoded at the metadata level.
struct MetaSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for MetaSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Wrapped {
            inner: d,
            level: Meta,
        })
    }
}

/// A map key, borrowed from the input when it can be (JSON keys without escapes are).
pub(crate) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Key<'de> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(k) => k,
            Key::Owned(k) => k,
        }
    }

    /// The key handed to the visitor's seed, as the unwrapped map would hand it.
    fn into_seed<S: DeserializeSeed<'de>, E: de::Error>(self, seed: S) -> Result<S::Value, E> {
        match self {
            Key::Borrowed(k) => seed.deserialize(k.into_deserializer()),
            Key::Owned(k) => seed.deserialize(k.into_deserializer()),
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'de>(PhantomData<&'de ()>);
        impl<'de> Visitor<'de> for KeyVisitor<'de> {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{DynamicObject, PartialObjectMeta};
    use serde_json::json;

    fn pod_json() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web"},
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicationController",
                    "name": "rc", "uid": "u0", "controller": true}]
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}
        })
    }

    #[test]
    fn decodes_all_but_managed_fields() {
        let text = serde_json::to_vec(&pod_json()).unwrap();
        let slim: Slim<Pod> = serde_json::from_slice(&text).unwrap();
        let mut full: Pod = serde_json::from_slice(&text).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        assert_eq!(slim.0.metadata.managed_fields, None);
        full.metadata.managed_fields = None;
        assert_eq!(slim.0, full);
    }

    #[test]
    fn from_json_reads_what_from_value_reads_and_its_errors() {
        let via_text: Pod = from_json(&pod_json()).unwrap();
        let via_value: Pod = serde_json::from_value(pod_json()).unwrap();
        assert_eq!(via_text, via_value);
        assert!(
            via_text.metadata.managed_fields.is_some(),
            "nothing is slimmed"
        );
        // A typed object converts into another of the same shape.
        let again: Pod = from_json(&via_value).unwrap();
        assert_eq!(again, via_value);
        let err = from_json::<Pod>(&json!({"spec": {"containers": 5}})).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn only_the_objects_own_metadata_is_slimmed() {
        // A field named managedFields elsewhere (here a label value's sibling in a nested
        // object) and a nested "metadata" (a pod template's) are decoded as they are.
        let v = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {"managedFields": "kept"}},
            "spec": {"containers": [{"name": "c", "env": [{"name": "metadata", "value": "x"}]}]}
        });
        let slim: Slim<Pod> = serde_json::from_value(v.clone()).unwrap();
        let full: Pod = serde_json::from_value(v).unwrap();
        assert_eq!(slim.0, full);
        assert_eq!(
            slim.0.metadata.annotations.unwrap()["managedFields"],
            "kept"
        );
    }

    #[test]
    fn partial_metadata_and_dynamic_objects_slim_too() {
        let text = serde_json::to_vec(&pod_json()).unwrap();
        let meta: Slim<PartialObjectMeta<DynamicObject>> = serde_json::from_slice(&text).unwrap();
        assert_eq!(meta.0.metadata.managed_fields, None);
        assert_eq!(meta.0.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(
            meta.0.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let dynamic: Slim<DynamicObject> = serde_json::from_slice(&text).unwrap();
        assert_eq!(dynamic.0.metadata.managed_fields, None);
        assert_eq!(dynamic.0.data["status"]["podIP"], "10.0.0.1");
    }

    #[test]
    fn a_watch_event_of_slim_objects_decodes() {
        let ev = json!({"type": "MODIFIED", "object": pod_json()});
        let text = serde_json::to_vec(&ev).unwrap();
        let got: kube::api::WatchEvent<Slim<Pod>> = serde_json::from_slice(&text).unwrap();
        let kube::api::WatchEvent::Modified(p) = got else {
            panic!("not a MODIFIED event")
        };
        assert_eq!(p.0.metadata.managed_fields, None);
        assert_eq!(p.0.status.unwrap().pod_ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for text in [
            &b"[1,2]"[..],
            b"{\"metadata\": 5}",
            b"{\"metadata\": {\"managedFields\": ",
            b"null",
        ] {
            assert!(serde_json::from_slice::<Slim<Pod>>(text).is_err());
        }
    }
}
