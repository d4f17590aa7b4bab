//! One list-and-watch machine for every kind: kube-runtime's watcher runs over `RawObject`
//! (an object's JSON text and its resourceVersion), and each event is decoded as `K` after.
//!
//! Why: kube's watcher is generic over the object type, and each of the ~30 kinds capstan
//! watches carried its own copy of the watcher's state machine and of the decoders reached
//! through it (a watch event is an adjacently tagged enum, whose derive also decodes every
//! `K` from serde's buffered `Content`, a path servers never take). Here that code exists
//! once; what stays per kind is `K`'s own decoder (from the text, with `managedFields` cut
//! out of it first), which a kind needs anyway.

use std::borrow::Cow;
use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;
use std::ops::Range;

use futures::{Stream, StreamExt};
use kube::api::{Api, ApiResource, ObjectMeta};
use kube::core::DynamicResourceScope;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{reflector, WatchStreamExt};
use kube::{Client, Resource};
use serde::de::value::MapAccessDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor,
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// An object as the shared watcher holds it: its JSON text, and the resourceVersion the
/// watcher resumes from (the only field it reads).
#[derive(Clone, Debug)]
pub struct RawObject {
    metadata: ObjectMeta,
    json: Box<RawValue>,
}

impl RawObject {
    /// The object's JSON text, as the server sent it.
    pub fn json(&self) -> &str {
        self.json.get()
    }

    /// The object decoded as `K`, without `metadata.managedFields`: the entries are cut
    /// from the text, and the rest decodes through `K`'s plain decoder, the one the
    /// client's responses use (decoding through `Slim<K>` compiled another per kind).
    pub fn decode<K: DeserializeOwned>(&self) -> Result<K, serde_json::Error> {
        let text = self.json.get();
        match managed_fields(text) {
            Some(cut) => {
                let mut rest = String::with_capacity(text.len() - cut.len());
                rest.push_str(&text[..cut.start]);
                rest.push_str(&text[cut.end..]);
                serde_json::from_str(&rest)
            }
            None => serde_json::from_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for RawObject {
    /// The text is captured as it is (serde_json's raw capture, as `RawValue` asks for it)
    /// from a list item, or from a watch event whose `type` comes first, as every API
    /// server writes it. An event buffered because its `object` came first is read as a
    /// value and written out again: correct, only slower.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = d.deserialize_newtype_struct(RAW_VALUE_TOKEN, TextVisitor)?;
        let metadata = ObjectMeta {
            resource_version: resource_version(json.get()).map_err(de::Error::custom)?,
            ..ObjectMeta::default()
        };
        Ok(RawObject { metadata, json })
    }
}

/// The newtype name by which `serde_json::value::RawValue` asks serde_json's decoder for
/// the text of a value (`serde_json::raw::TOKEN`, not exported). Were it ever to change,
/// the decoder would take the buffered path below: slower, still correct; the unit test
/// `a_watch_event_holds_the_text_and_the_resource_version` would see the text rewritten.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Box<RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    // serde_json hands the captured text over as a one-entry map, which `RawValue`'s own
    // decoding reads.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Box<RawValue>, A::Error> {
        Box::<RawValue>::deserialize(MapAccessDeserializer::new(map))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Box<RawValue>, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        serde_json::value::to_raw_value(&value).map_err(de::Error::custom)
    }
}

/// The object's `metadata.resourceVersion`, read from the start of its text and no further:
/// keys before `metadata` and before `resourceVersion` within it are skipped unread, and
/// the reading stops there (servers write `metadata` before `spec` and `status`, so most of
/// an object is not looked at twice).
fn resource_version(text: &str) -> Result<Option<String>, serde_json::Error> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_str(text);
    match de.deserialize_map(Find {
        path: &["metadata", "resourceVersion"],
        found: &mut found,
    }) {
        Ok(()) => Ok(None),
        // Stopping early ends the decoding with an error of its own making.
        Err(_) if found.is_some() => Ok(found.flatten()),
        Err(e) => Err(e),
    }
}

/// Reads the string at `path` in a map into `found` and then stops the decoding; `found`
/// is set (to `None` if the string is absent or null) once the first key of the path is.
struct Find<'p, 'f> {
    path: &'p [&'p str],
    found: &'f mut Option<Option<String>>,
}

impl<'de> Visitor<'de> for Find<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key != *first {
                map.next_value::<IgnoredAny>()?;
            } else if rest.is_empty() {
                *self.found = Some(map.next_value::<Option<String>>()?);
                return Err(de::Error::custom("found"));
            } else {
                map.next_value_seed(Find {
                    path: rest,
                    found: &mut *self.found,
                })?;
                // Not in there: the answer is still known.
                *self.found = Some(None);
                return Err(de::Error::custom("absent"));
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Find<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

/// Where `metadata.managedFields` is in `text`, with one comma beside it: the span whose
/// removal leaves valid JSON without it. `None` if it is absent, if its key is escaped (no
/// server writes it so) or if the text is not an object: the object then decodes whole.
/// Only the text up to the entry's end is read (servers write `metadata` first).
fn managed_fields(text: &str) -> Option<Range<usize>> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_str(text);
    // The search ends early with an error of its own making, or at the text's end.
    let _ = de.deserialize_map(FindManaged {
        text,
        in_meta: false,
        found: &mut found,
    });
    let (key, end) = found?;
    let before = text[..key].trim_end();
    if let Some(comma) = before.strip_suffix(',') {
        return Some(comma.len()..end);
    }
    // The first key of `metadata`: the comma after it goes instead.
    let after = &text[end..];
    let gap = after.len() - after.trim_start().len();
    Some(match after[gap..].starts_with(',') {
        true => key..end + gap + 1,
        false => key..end,
    })
}

/// Walks the object to `metadata.managedFields` and records where its key starts and its
/// value ends (byte offsets in `text`).
struct FindManaged<'t, 'f> {
    text: &'t str,
    in_meta: bool,
    found: &'f mut Option<(usize, usize)>,
}

impl<'t> FindManaged<'t, '_> {
    fn offset(&self, part: &str) -> usize {
        part.as_ptr() as usize - self.text.as_ptr() as usize
    }
}

impl<'de> Visitor<'de> for FindManaged<'de, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let wanted = if self.in_meta {
            "managedFields"
        } else {
            "metadata"
        };
        while let Some(key) = map.next_key::<crate::Key<'de>>()? {
            if key.as_str() != wanted {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if !self.in_meta {
                map.next_value_seed(FindManaged {
                    text: self.text,
                    in_meta: true,
                    found: &mut *self.found,
                })?;
                return Err(de::Error::custom("metadata read"));
            }
            let crate::Key::Borrowed(key) = key else {
                return Err(de::Error::custom("escaped key"));
            };
            let value: &'de RawValue = map.next_value()?;
            // The key's text starts one byte (its quote) before its content.
            let start = self.offset(key) - 1;
            let end = self.offset(value.get()) + value.get().len();
            *self.found = Some((start, end));
            return Err(de::Error::custom("found"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for FindManaged<'de, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl Resource for RawObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Where a watch of `K`s lists and watches: `K`'s resource, in one namespace or all.
pub struct WatchApi<K> {
    api: Api<RawObject>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource> WatchApi<K> {
    /// Every namespace (or the cluster, for a cluster-scoped kind).
    pub fn all(client: Client) -> Self
    where
        K::DynamicType: Default,
    {
        Self::all_with(client, &Default::default())
    }

    /// Every namespace, for a kind known by its dynamic type.
    pub fn all_with(client: Client, dt: &K::DynamicType) -> Self {
        let ar = ApiResource::erase::<K>(dt);
        WatchApi {
            api: Api::all_with(client, &ar),
            kind: PhantomData,
        }
    }

    /// One namespace.
    pub fn namespaced(client: Client, namespace: &str) -> Self
    where
        K::DynamicType: Default,
    {
        let ar = ApiResource::erase::<K>(&Default::default());
        WatchApi {
            api: Api::namespaced_with(client, namespace, &ar),
            kind: PhantomData,
        }
    }
}

impl<K> From<Api<K>> for WatchApi<K>
where
    K: Resource,
    K::DynamicType: Default,
{
    /// The same resource and namespace as a typed `Api` (its client's identity too).
    fn from(api: Api<K>) -> Self {
        let namespace = api.namespace().map(str::to_owned);
        let client = api.into_client();
        match namespace {
            Some(ns) => Self::namespaced(client, &ns),
            None => Self::all(client),
        }
    }
}

/// kube-runtime's watcher over `K`'s resource, handing out `K`s decoded without
/// `metadata.managedFields`. An object that does not decode as `K` is an error item (the
/// watch goes on), as a line that does not decode is in kube's own watcher.
pub fn watch<K>(
    api: WatchApi<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: DeserializeOwned + Send + 'static,
{
    watcher::watcher(api.api, config).map(|r| r.and_then(decode_event))
}

/// kube-runtime's `watcher(api, config)`, drop-in: `watch` over the typed `Api`'s resource
/// and namespace.
pub fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watch(api.into(), config)
}

/// What `watcher` saw change (applied or deleted), as `Controller::owns_stream` and
/// `watches_stream` take it (kube's `owns` and `watches` watch so themselves).
pub fn touched<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, config).touched_objects()
}

/// `Controller::new` of kube-runtime, fed by `watch`: the loop's own store and trigger,
/// with the shared watcher underneath.
pub fn controller<K>(api: Api<K>, config: watcher::Config) -> crate::Controller<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Debug + Clone + Eq + Hash + Unpin + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let trigger = reflector::reflector(writer, watch(api.into(), config)).applied_objects();
    crate::Controller::for_stream(trigger, reader)
}

fn decode_event<K: DeserializeOwned>(e: Event<RawObject>) -> Result<Event<K>, watcher::Error> {
    let decode = |o: RawObject| {
        o.decode::<K>()
            .map_err(|e| watcher::Error::WatchFailed(kube::Error::SerdeError(e)))
    };
    Ok(match e {
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(decode(o)?),
        Event::InitDone => Event::InitDone,
        Event::Apply(o) => Event::Apply(decode(o)?),
        Event::Delete(o) => Event::Delete(decode(o)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{ObjectList, WatchEvent};
    use serde_json::json;

    fn pod(rv: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "p", "namespace": "ns", "resourceVersion": rv,
                "managedFields": [{"manager": "m", "operation": "Update", "apiVersion": "v1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        })
    }

    #[test]
    fn a_watch_event_holds_the_text_and_the_resource_version() {
        // As servers write it: `type` first, then the object, whose text is kept byte for
        // byte (captured, not rebuilt from a value: the keys here are not in sorted order).
        let object = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns","resourceVersion":"42","managedFields":[{"manager":"m","operation":"Update","apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{}}}]},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        let line = format!(r#"{{"type":"MODIFIED","object":{object}}}"#);
        let WatchEvent::Modified(raw) =
            serde_json::from_str::<WatchEvent<RawObject>>(&line).expect("decodes")
        else {
            panic!("not MODIFIED")
        };
        assert_eq!(raw.json(), object);
        assert_eq!(raw.meta().resource_version.as_deref(), Some("42"));
        let p: Pod = raw.decode().expect("a pod");
        assert_eq!(p.metadata.name.as_deref(), Some("p"));
        assert_eq!(p.metadata.managed_fields, None);
        let mut full: Pod = serde_json::from_value(pod("42")).unwrap();
        full.metadata.managed_fields = None;
        assert_eq!(p, full);
    }

    #[test]
    fn managed_fields_are_cut_wherever_they_are_in_metadata_and_nowhere_else() {
        let cut = |t: &str| -> String {
            match managed_fields(t) {
                Some(r) => format!("{}{}", &t[..r.start], &t[r.end..]),
                None => t.to_string(),
            }
        };
        let mf = r#"[{"manager":"m","fieldsV1":{"f:a":{}}}]"#;
        // Last, first, between, alone, with spaces; the rest byte for byte.
        for (text, want) in [
            (
                format!(r#"{{"metadata":{{"name":"p","managedFields":{mf}}},"spec":{{}}}}"#),
                r#"{"metadata":{"name":"p"},"spec":{}}"#,
            ),
            (
                format!(r#"{{"metadata":{{"managedFields":{mf},"name":"p"}}}}"#),
                r#"{"metadata":{"name":"p"}}"#,
            ),
            (
                format!(r#"{{"kind":"X","metadata":{{"a":1,"managedFields":{mf},"b":2}}}}"#),
                r#"{"kind":"X","metadata":{"a":1,"b":2}}"#,
            ),
            (
                format!(r#"{{"metadata":{{"managedFields":{mf}}}}}"#),
                r#"{"metadata":{}}"#,
            ),
            (
                format!(r#"{{ "metadata" : {{ "name" : "p" , "managedFields" : {mf} }} }}"#),
                r#"{ "metadata" : { "name" : "p"  } }"#,
            ),
            (
                format!(r#"{{ "metadata" : {{ "managedFields" : {mf} , "name" : "p" }} }}"#),
                r#"{ "metadata" : {  "name" : "p" } }"#,
            ),
            (
                r#"{"metadata":{"name":"p","managedFields":null}}"#.to_string(),
                r#"{"metadata":{"name":"p"}}"#,
            ),
        ] {
            assert_eq!(cut(&text), want, "{text}");
            serde_json::from_str::<serde_json::Value>(want).expect("still JSON");
        }
        // Outside metadata, escaped, absent, not an object: left as it is.
        for text in [
            format!(r#"{{"spec":{{"managedFields":{mf}}},"metadata":{{"name":"p"}}}}"#),
            format!(r#"{{"metadata":{{"managed\u0046ields":{mf}}}}}"#),
            r#"{"metadata":{"name":"p"}}"#.to_string(),
            "[1,2]".to_string(),
            "{\"metadata\":".to_string(),
        ] {
            assert_eq!(cut(&text), text);
        }
    }

    #[test]
    fn a_kind_decodes_as_it_would_whole_less_its_managed_fields() {
        let text = pod("9").to_string();
        let raw: RawObject = serde_json::from_str(&text).expect("decodes");
        let p: Pod = raw.decode().expect("a pod");
        let mut full: Pod = serde_json::from_str(&text).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        full.metadata.managed_fields = None;
        assert_eq!(p, full);
        // A wrong type still fails, as the whole object would.
        let bad = r#"{"metadata":{"name":"p","managedFields":[]},"spec":{"containers":5}}"#;
        let raw: RawObject = serde_json::from_str(bad).expect("captured");
        assert!(raw.decode::<Pod>().is_err());
    }

    #[test]
    fn an_event_whose_object_comes_first_still_decodes() {
        let line = format!(r#"{{"object":{},"type":"ADDED"}}"#, pod("7"));
        let WatchEvent::Added(raw) =
            serde_json::from_str::<WatchEvent<RawObject>>(&line).expect("decodes")
        else {
            panic!("not ADDED")
        };
        assert_eq!(raw.meta().resource_version.as_deref(), Some("7"));
        let p: Pod = raw.decode().expect("a pod");
        assert_eq!(p.metadata.name.as_deref(), Some("p"));
    }

    #[test]
    fn the_resource_version_is_read_wherever_it_is() {
        let rv = |t: &str| resource_version(t).expect(t);
        assert_eq!(
            rv(r#"{"metadata":{"resourceVersion":"3"},"spec":{}}"#).as_deref(),
            Some("3")
        );
        assert_eq!(
            rv(r#"{"spec":{"metadata":{"resourceVersion":"9"}},"kind":"X","metadata":{"name":"n","managedFields":[{"a":{"resourceVersion":"8"}}],"resourceVersion":"4"}}"#).as_deref(),
            Some("4")
        );
        assert_eq!(rv(r#"{"metadata":{"name":"n"},"spec":{}}"#), None);
        assert_eq!(rv(r#"{"metadata":{"resourceVersion":null}}"#), None);
        assert_eq!(rv(r#"{"kind":"X"}"#), None);
        // Stopping early is not a licence for what came before to be wrong.
        assert!(resource_version(r#"{"metadata":{"resourceVersion":5}}"#).is_err());
        assert!(resource_version(r#"{"metadata":5}"#).is_err());
        assert!(resource_version("[1]").is_err());
    }

    #[test]
    fn list_items_are_captured_one_by_one() {
        let text = json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"},
            "items": [pod("3"), pod("5")]
        })
        .to_string();
        let list: ObjectList<RawObject> = serde_json::from_str(&text).expect("decodes");
        assert_eq!(list.metadata.resource_version.as_deref(), Some("9"));
        let rvs: Vec<_> = list
            .items
            .iter()
            .map(|o| o.meta().resource_version.clone())
            .collect();
        assert_eq!(rvs, [Some("3".to_string()), Some("5".to_string())]);
    }

    #[test]
    fn an_object_without_metadata_has_no_resource_version() {
        let raw: RawObject =
            serde_json::from_str(r#"{"kind":"X","spec":{"a":[1,{"b":"c"}]}}"#).expect("decodes");
        assert_eq!(raw.meta().resource_version, None);
        assert_eq!(raw.json(), r#"{"kind":"X","spec":{"a":[1,{"b":"c"}]}}"#);
    }

    #[test]
    fn what_does_not_decode_as_the_kind_is_an_error_event() {
        let raw: RawObject =
            serde_json::from_str(r#"{"metadata":{"resourceVersion":"1"},"spec":5}"#).unwrap();
        assert!(decode_event::<Pod>(Event::Apply(raw.clone())).is_err());
        assert!(matches!(
            decode_event::<Pod>(Event::InitDone),
            Ok(Event::InitDone)
        ));
        for bad in ["[1]", r#"{"metadata": 5}"#, "{", ""] {
            assert!(serde_json::from_str::<RawObject>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_watch_api_names_the_kinds_resource() {
        let ar = ApiResource::erase::<Pod>(&());
        assert_eq!(
            RawObject::url_path(&ar, Some("ns")),
            Pod::url_path(&(), Some("ns"))
        );
        assert_eq!(RawObject::url_path(&ar, None), Pod::url_path(&(), None));
    }
}
