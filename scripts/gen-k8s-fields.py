#!/usr/bin/env python3
"""Generate crates/apiserver/src/k8s_fields.tsv from the k8s-pb crate's prost sources.

One line per field of every Kubernetes protobuf message: the message, the field (snake
case, as prost names it), its tag, wire kind, cardinality, message type, and the markers
upstream's API types carry (+patchStrategy, +patchMergeKey, +listType, +listMapKey,
+mapType). The API server reads it for strategic merge keys, OpenAPI list extensions and
protobuf decoding. Run it after changing the k8s-pb version:

    python3 scripts/gen-k8s-fields.py ~/.cargo/registry/src/*/k8s-pb-0.9.0/src
"""
import os
import re
import sys

root = sys.argv[1]
out_path = os.path.join(os.path.dirname(__file__), "..", "crates", "apiserver", "src", "k8s_fields.tsv")
ATTR = re.compile(r'#\[prost\((.*)\)\]')
MARK = re.compile(r'///\s*\+(patchStrategy|patchMergeKey|listType|listMapKey|mapType)=(\S+)')
rows = []
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs") or f == "lib.rs":
            continue
        rel = os.path.relpath(os.path.join(dirpath, f), root)
        parts = rel.split(os.sep)[:-1] if f == "mod.rs" else rel[:-3].split(os.sep)
        module = parts
        lines = open(os.path.join(dirpath, f)).read().split("\n")
        i = 0
        msg = None
        marks = []
        while i < len(lines):
            line = lines[i].strip()
            m = re.match(r'pub struct (\w+) \{', line)
            if m:
                msg = ".".join(module + [m.group(1)])
                marks = []
            elif line == "}":
                msg = None
            elif msg and line.startswith("///"):
                mm = MARK.match(line)
                if mm:
                    marks.append(f"{mm.group(1)}={mm.group(2)}")
            elif msg and line.startswith("#[prost("):
                attr = line
                while not attr.endswith(")]"):
                    i += 1
                    attr += " " + lines[i].strip()
                decl = ""
                i += 1
                while True:
                    decl += " " + lines[i].strip()
                    if decl.rstrip().endswith(",") and decl.count("<") == decl.count(">"):
                        break
                    i += 1
                a = ATTR.match(attr).group(1)
                tag = re.search(r'tag = "(\d+)"', a).group(1)
                dm = re.match(r'\s*pub (r#)?(\w+):\s*(.*),$', decl)
                name, ty = dm.group(2), dm.group(3)
                card = "r" if "repeated" in a else "o"
                if a.startswith("btree_map"):
                    kind = "map:" + re.search(r'btree_map = "([^"]*)"', a).group(1).replace(" ", "")
                    card = "m"
                else:
                    kind = a.split(",")[0].strip().split(" ")[0]
                target = ""
                if "message" in kind:
                    paths = re.findall(r'(?:super::|\w+::)*[A-Z]\w*', ty.replace(" ", ""))
                    paths = [p for p in paths if p.split("::")[-1] not in ("Option", "Vec", "BTreeMap", "String", "Box")]
                    path = paths[-1] if paths else ty
                    segs = path.split("::")
                    up = 0
                    while segs and segs[0] == "super":
                        up += 1
                        segs = segs[1:]
                    base = module[: len(module) - up] if up else module
                    target = ".".join(base + segs)
                rows.append("\t".join([msg, name, tag, kind, card, target, ";".join(marks)]))
                marks = []
            i += 1
rows.sort()
with open(out_path, "w") as out:
    out.write("\n".join(rows) + "\n")
print(f"{len(rows)} fields -> {out_path}")
