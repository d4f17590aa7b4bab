//! `meta.k8s.io/v1` Tables: the server-side printing `kubectl get` asks for, with the same
//! columns kube-apiserver prints for each type.

use serde_json::{json, Value};

use crate::object;
use crate::types::registry::ResourceType;
use crate::types::shared::printing::described_col;

pub use crate::encoding::negotiation::{table_version, TABLE_V1, TABLE_V1BETA1};

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    table_version(accept).is_some()
}

/// The kind's columns (its strategy's, a CRD's additionalPrinterColumns), else NAME AGE.
fn columns(rt: &ResourceType) -> Vec<Value> {
    let name = described_col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    );
    if rt.custom.is_some() {
        let mut cols = vec![name];
        for c in custom_columns(rt) {
            let ty = if c.type_ == "date" { "date" } else { &c.type_ };
            cols.push(described_col(
                &c.name,
                ty,
                &c.format,
                &c.description,
                c.priority,
            ));
        }
        return cols;
    }
    rt.strategy.columns().unwrap_or_else(|| {
        let age = described_col("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0);
        vec![name, age]
    })
}

/// A CRD version's columns; upstream shows AGE when the CRD names none.
fn custom_columns(rt: &ResourceType) -> Vec<crate::types::crd::PrinterColumn> {
    match &rt.custom {
        Some(c) if !c.columns.is_empty() => c.columns.clone(),
        _ => vec![crate::types::crd::PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            format: String::new(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        }],
    }
}

/// One custom column's cell: the JSONPath's value typed as the column says; a date prints
/// as an age; nothing selected is null (kubectl prints `<none>`).
fn custom_cell(c: &crate::types::crd::PrinterColumn, obj: &Value) -> Value {
    let Ok(path) = crate::types::jsonpath::JsonPath::parse(&c.json_path) else {
        return Value::Null;
    };
    let found = path.eval(obj);
    let Some(first) = found.first() else {
        return Value::Null;
    };
    match c.type_.as_str() {
        "date" => match first.as_str() {
            Some(ts) => json!(object::age(Some(ts))),
            None => Value::Null,
        },
        "integer" | "number" | "boolean" => (*first).clone(),
        _ => {
            let text: Vec<String> = found
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            json!(text.join(","))
        }
    }
}

fn cells(rt: &ResourceType, obj: &Value) -> Vec<Value> {
    let name = json!(object::name(obj));
    if rt.custom.is_some() {
        let mut out = vec![name];
        out.extend(custom_columns(rt).iter().map(|c| custom_cell(c, obj)));
        return out;
    }
    rt.strategy.cells(obj).unwrap_or_else(|| {
        vec![
            name,
            json!(object::age(object::meta_str(obj, "creationTimestamp"))),
        ]
    })
}

/// The PartialObjectMetadata kubectl expects in each row.
fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

pub fn table(
    rt: &ResourceType,
    objs: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    api_version: &str,
) -> Value {
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| json!({"cells": cells(rt, o), "object": partial(o)}))
        .collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": meta,
        "columnDefinitions": columns(rt),
        "rows": rows,
    })
}
