"""Figures, not assertions: the server's resident memory (RSS) as large CRDs come and go.

Generates N CRDs shaped like the big real-world ones (Prometheus Operator, Argo CD):
several versions, deep nesting, long descriptions, int-or-string and quantity fields,
list-maps, enums, CEL rules — about 0.6 MB of JSON each by default. Starts the binary in
CAPSTAN_BIN on a fresh data dir, then prints its RSS (from /proc/PID/status) when idle,
after installing the CRDs and using each (a custom resource created, OpenAPI v2 and v3
read, as kubectl does), and after deleting them all:

    CAPSTAN_BIN=target/release/capstan python3 benches/crd_memory.py [--crds 10]

`--emit DIR` only writes the CRDs (one JSON file each) and exits; the e2e test
tests/e2e/tests/crd_memory.rs uses that to install the same CRDs.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Seconds to wait before reading RSS: the server returns free heap pages every 5 s.
SETTLE = 6
WORDS = ("the", "controller", "reconciles", "endpoint", "selector", "which", "must", "match",
         "labels", "of", "pods", "scraped", "every", "interval", "unless", "overridden", "by",
         "annotation", "value", "when", "set", "otherwise", "defaults", "apply", "to", "fields")


def description(seed, words):
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(words)).capitalize() + "."


def leaf(seed, desc_words):
    kind = seed % 6
    d = description(seed, desc_words)
    if kind == 0:
        return {"type": "string", "description": d, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
    if kind == 1:
        return {"type": "integer", "format": "int32", "minimum": 0, "maximum": 65535, "description": d}
    if kind == 2:
        return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True,
                "description": d}
    if kind == 3:
        return {"type": "object", "description": d, "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$",
            "x-kubernetes-int-or-string": True}}
    if kind == 4:
        return {"type": "string", "enum": ["Always", "Never", "IfNotPresent"], "default": "Always", "description": d}
    return {"type": "boolean", "description": d}


def tree(seed, depth, fanout, recurse, desc_words):
    """An object with `fanout` fields; `recurse` of them are objects (or list-maps of
    objects) nested one level deeper, the rest leaves."""
    props = {}
    for i in range(fanout):
        s = seed * 31 + i
        name = f"field{i}{WORDS[s % len(WORDS)].capitalize()}"
        if depth > 0 and i < recurse:
            child = tree(s, depth - 1, fanout, recurse, desc_words)
            if i % 2 == 1:
                child["properties"]["name"] = {"type": "string", "description": "Name of the entry."}
                child["required"] = ["name"]
                props[name] = {"type": "array", "description": description(s, desc_words),
                               "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                               "items": child}
            else:
                props[name] = child
        else:
            props[name] = leaf(s, desc_words)
    return {"type": "object", "description": description(seed, desc_words), "properties": props}


def crd(index, versions=4, depth=4, fanout=8, recurse=2, desc_words=40):
    group = f"load{index}.capstan.test"
    vs = []
    for v in range(versions):
        name = ["v1", "v1beta1", "v1alpha2", "v1alpha1", "v2"][v % 5]
        spec = tree(index * 1000 + v, depth, fanout, recurse, desc_words)
        first = next(iter(spec["properties"]))
        spec["x-kubernetes-validations"] = [{"rule": f"!has(self.{first}) || self.{first} == self.{first}",
                                             "message": "always true"}]
        vs.append({
            "name": name, "served": True, "storage": v == 0,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [{"name": "Ready", "type": "string", "jsonPath": ".status.ready"}],
            "schema": {"openAPIV3Schema": {
                "type": "object", "description": description(index, desc_words),
                "properties": {
                    "spec": spec,
                    "status": {"type": "object", "properties": {"ready": {"type": "string"}}},
                }}},
        })
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"loads.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "loads", "singular": "load", "kind": "Load", "listKind": "LoadList"},
                 "versions": vs},
    }


def emit(directory, count):
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = directory / f"crd-{i}.json"
        p.write_text(json.dumps(crd(i)))
        paths.append(p)
    return paths


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def kubectl(kubeconfig, *args, check=True):
    out = subprocess.run(["kubectl", *args], env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                         capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stdout}{out.stderr}")
    return out


def until(what, pred, within=60):
    deadline = time.time() + within
    while not pred():
        if time.time() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crds", type=int, default=10)
    ap.add_argument("--emit", type=pathlib.Path)
    args = ap.parse_args()
    if args.emit:
        emit(args.emit, args.crds)
        return
    binary = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        paths = emit(tmp / "crds", args.crds)
        size = sum(p.stat().st_size for p in paths)
        data = tmp / "data"
        proc = subprocess.Popen([binary, "server", "--no-agent", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            proc.stdout.readline()
            kc = data / "kubeconfig"
            kubectl(kc, "get", "--raw", "/openapi/v2")
            time.sleep(SETTLE)
            idle = rss_kib(proc.pid)
            for i, p in enumerate(paths):
                kubectl(kc, "create", "-f", str(p))
                kubectl(kc, "wait", "--for=condition=Established", f"crd/loads.load{i}.capstan.test")
            time.sleep(SETTLE)
            established = rss_kib(proc.pid)
            for i in range(len(paths)):
                cr = {"apiVersion": f"load{i}.capstan.test/v1", "kind": "Load",
                      "metadata": {"name": "one", "namespace": "default"}, "spec": {}}
                until("the CRD's API", lambda: subprocess.run(
                    ["kubectl", "create", "-f", "-"], input=json.dumps(cr), text=True,
                    capture_output=True, env={**os.environ, "KUBECONFIG": str(kc)}).returncode == 0)
            time.sleep(SETTLE)
            objects = rss_kib(proc.pid)
            for i in range(len(paths)):
                kubectl(kc, "get", "--raw", f"/openapi/v3/apis/load{i}.capstan.test/v1")
            kubectl(kc, "get", "--raw", "/openapi/v2")
            time.sleep(SETTLE)
            installed = rss_kib(proc.pid)
            for i in range(len(paths)):
                kubectl(kc, "delete", "crd", f"loads.load{i}.capstan.test")
            until("the CRDs to go", lambda: kubectl(kc, "get", "crd", "-o", "name").stdout.strip() == "")
            kubectl(kc, "get", "--raw", "/openapi/v2")
            time.sleep(SETTLE)
            deleted = rss_kib(proc.pid)
        finally:
            proc.kill()
            proc.wait()
    print(f"{args.crds} CRDs, {size / 1e6:.1f} MB of JSON ({size / args.crds / 1e3:.0f} kB each)")
    print(f"RSS idle (after /openapi/v2):         {idle / 1024:7.1f} MiB")
    print(f"RSS with the CRDs established:        {established / 1024:7.1f} MiB "
          f"(+{(established - idle) / 1024:.1f} MiB)")
    print(f"RSS after one object of each:         {objects / 1024:7.1f} MiB "
          f"(+{(objects - idle) / 1024:.1f} MiB)")
    print(f"RSS with the CRDs installed and used: {installed / 1024:7.1f} MiB "
          f"(+{(installed - idle) / 1024:.1f} MiB, OpenAPI v3 and v2 read)")
    print(f"RSS after deleting them:              {deleted / 1024:7.1f} MiB "
          f"(+{(deleted - idle) / 1024:.1f} MiB over idle)")


if __name__ == "__main__":
    sys.exit(main())
