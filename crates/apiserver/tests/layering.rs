//! The shape of the API server's code, checked: its folders (one per step of the request
//! path) import each other without cycles, and the generic request path names no kind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The non-test code of a file (unit tests may reach anywhere).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    text.split("#[cfg(test)]").next().unwrap_or("").to_string()
}

/// The top-level module a file belongs to: its folder, or the file itself at the top.
fn unit(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// `crate::<unit>` references between top-level modules. The crate root (`lib.rs`: the
/// shared `AppState` handle and the router that assembles every step) is not a unit.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let units: BTreeSet<String> = files.iter().map(|f| unit(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = unit(f);
        if from == "lib" {
            continue;
        }
        let text = code(f);
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != from && units.contains(&name) && name != "lib" {
                edges.entry(from.clone()).or_default().insert(name);
            }
        }
    }
    edges
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_request_path_folders_import_each_other_without_cycles() {
    let edges = graph();
    for (from, to) in &edges {
        println!(
            "{from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(
        edges.len() >= 10,
        "expected the folders of the request path, found {edges:?}"
    );
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle between folders: {}", cycle.join(" -> "));
    }
    // The layering it implies, spot-checked: types know nothing of requests or storage.
    let types = edges.get("types").cloned().unwrap_or_default();
    for below in [
        "rest",
        "routing",
        "admission",
        "storage",
        "serving",
        "patch",
    ] {
        assert!(!types.contains(below), "types imports {below}");
    }
}

#[test]
fn a_cycle_would_be_found() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert!(find_cycle(&edges).is_none());
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn the_generic_request_path_names_no_kind() {
    // What a kind does lives in its strategy (types/) or in an admission plugin that
    // declares the resources it handles; these steps ask them and compare no kind names.
    let generic = [
        "rest",
        "routing.rs",
        "patch",
        "storage",
        "encoding",
        "serving",
        "discovery",
        "telemetry",
        "crds",
    ];
    let needles = [
        "\"Pod\"",
        "\"Service\"",
        "\"Namespace\"",
        "\"CustomResourceDefinition\"",
        "rt.kind ==",
        "rt.group.as_str(), rt.kind.as_str()",
        "is_crd()",
    ];
    let mut found = Vec::new();
    for g in generic {
        let mut files = Vec::new();
        let path = src().join(g);
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else {
            files.push(path);
        }
        for f in files {
            for (n, line) in code(&f).lines().enumerate() {
                if needles.iter().any(|needle| line.contains(needle)) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "kind names in the generic path:\n{}",
        found.join("\n")
    );
}
