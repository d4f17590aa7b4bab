//! The built-in types' field table, generated from k8s-pb's sources by
//! `scripts/gen-k8s-fields.py`: protobuf tags and kinds, and the list/map markers
//! (`patchMergeKey`, `listType`, …) that strategic merge patch and OpenAPI need.

use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, Default)]
pub struct Field {
    /// prost's snake_case name; compare with JSON names through `normalize`.
    pub name: &'static str,
    /// `normalize(name)`, made once with the table (the encoders look fields up per object).
    pub norm: String,
    pub tag: u32,
    /// `string`, `int32`, `message`, `map:string,string`, …
    pub kind: &'static str,
    /// `o` optional/singular, `r` repeated, `m` map.
    pub card: u8,
    /// The message type of a message field (or of a map's values).
    pub target: &'static str,
    pub patch_strategy: Option<&'static str>,
    pub merge_key: Option<&'static str>,
    pub list_type: Option<&'static str>,
    pub list_map_keys: Vec<&'static str>,
    pub map_type: Option<&'static str>,
}

pub struct Table {
    messages: HashMap<String, Vec<Field>>,
}

/// `podIP` and `pod_ip` (and `PodDNSConfig`/`PodDnsConfig`) compare equal.
pub fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

static TABLE: OnceLock<Table> = OnceLock::new();

pub fn table() -> &'static Table {
    TABLE.get_or_init(|| {
        let mut messages: HashMap<String, Vec<Field>> = HashMap::new();
        for line in include_str!("k8s_fields.tsv").lines() {
            let cols: Vec<&'static str> = line.split('\t').collect();
            if cols.len() < 7 {
                continue;
            }
            let mut f = Field {
                name: cols[1],
                norm: normalize(cols[1]),
                tag: cols[2].parse().unwrap_or(0),
                kind: cols[3],
                card: cols[4].bytes().next().unwrap_or(b'o'),
                target: cols[5],
                ..Default::default()
            };
            for mark in cols[6].split(';').filter(|m| !m.is_empty()) {
                let Some((k, v)) = mark.split_once('=') else {
                    continue;
                };
                match k {
                    "patchStrategy" => f.patch_strategy = Some(v),
                    "patchMergeKey" => f.merge_key = Some(v),
                    "listType" => f.list_type = Some(v),
                    "listMapKey" => f.list_map_keys.push(v),
                    "mapType" => f.map_type = Some(v),
                    _ => {}
                }
            }
            messages.entry(normalize(cols[0])).or_default().push(f);
        }
        // In tag order, as Go's generated marshallers write fields.
        for fields in messages.values_mut() {
            fields.sort_by_key(|f| f.tag);
        }
        Table { messages }
    })
}

impl Table {
    /// A message by its protobuf path (`api.apps.v1.Deployment`).
    pub fn message(&self, name: &str) -> Option<&[Field]> {
        self.messages.get(&normalize(name)).map(Vec::as_slice)
    }

    /// The message behind an OpenAPI definition name
    /// (`io.k8s.api.apps.v1.Deployment`, `io.k8s.apiextensions-apiserver.pkg…`).
    pub fn for_definition(&self, definition: &str) -> Option<&[Field]> {
        self.message(definition.strip_prefix("io.k8s.").unwrap_or(definition))
    }

    /// A message's field by its JSON name.
    pub fn field<'a>(fields: &'a [Field], json_name: &str) -> Option<&'a Field> {
        let n = normalize(json_name);
        fields.iter().find(|f| f.norm == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_knows_merge_keys_and_tags() {
        let t = table();
        let pod_spec = t.for_definition("io.k8s.api.core.v1.PodSpec").unwrap();
        let containers = Table::field(pod_spec, "containers").unwrap();
        assert_eq!(containers.merge_key, Some("name"));
        assert_eq!(containers.patch_strategy, Some("merge"));
        assert_eq!(containers.target, "api.core.v1.Container");
        let status = t.for_definition("io.k8s.api.core.v1.PodStatus").unwrap();
        assert_eq!(Table::field(status, "podIP").unwrap().tag, 6);
        let port = t.message("api.core.v1.ServiceSpec").unwrap();
        assert_eq!(
            Table::field(port, "ports").unwrap().list_map_keys,
            ["port", "protocol"]
        );
        assert!(t
            .for_definition("io.k8s.api.core.v1.PodDNSConfig")
            .is_some());
        assert!(t.for_definition("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionSpec").is_some());
    }
}
