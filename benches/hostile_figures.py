"""Figures, not assertions: each attack of the hostile-input suite against the binary in
CAPSTAN_BIN, printing the server's RSS (before, peak, after) and the slowest /readyz
answer while it ran. Run it for two binaries to compare (a crashed or hung server is
reported as such, not retried):

    CAPSTAN_BIN=old/capstan target/python-venv/bin/python benches/hostile_figures.py
    CAPSTAN_BIN=target/release/capstan target/python-venv/bin/python benches/hostile_figures.py
"""
import json
import pathlib
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "python"))
from hostile import Probe, Server, nested, raw_tls  # noqa: E402

CMS = "/api/v1/namespaces/default/configmaps"


def deep_cr(s):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "deeps.f.example.com"},
           "spec": {"group": "f.example.com", "scope": "Namespaced",
                    "names": {"plural": "deeps", "singular": "deep", "kind": "Deep", "listKind": "DeepList"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}
    s.json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    time.sleep(0.5)
    body = '{"apiVersion":"f.example.com/v1","kind":"Deep","metadata":{"name":"d"},"spec":%s}' % nested(122)
    created = s.request("POST", "/apis/f.example.com/v1/namespaces/default/deeps", body)[0]
    listed = s.request("GET", "/apis/f.example.com/v1/namespaces/default/deeps")[0]
    return f"create_124={created} list={listed}"


def copy_bomb(s):
    s.json("POST", CMS, {"metadata": {"name": "bomb"}})
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"a": ["x" * 16]}}]
    ops += [{"op": "copy", "from": "/metadata/annotations/a", "path": "/metadata/annotations/a/-"}] * 40
    return f"patch={s.request('PATCH', f'{CMS}/bomb', json.dumps(ops), ctype='application/json-patch+json', timeout=120)[0]}"


def stalled_watcher(s, writes=400):
    payload = "x" * (1 << 20)
    s.json("POST", CMS, {"metadata": {"name": "big"}, "data": {"v": payload}})
    w = raw_tls(s)
    w.sendall(f"GET {CMS}?watch=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {s.token}\r\n\r\n".encode())
    c = s.conn()
    for i in range(writes):
        c.request("PATCH", f"{CMS}/big", body=json.dumps({"data": {"v": payload[:-8] + f"{i:08d}"}}),
                  headers={"Authorization": f"Bearer {s.token}", "Content-Type": "application/merge-patch+json"})
        r = c.getresponse()
        r.read()
    w.close()
    return f"writes={writes}x1MiB"


def heavy(s):
    t = time.monotonic()
    code = s.request("POST", CMS, "a: " + "[" * 80_000 + "]" * 80_000, ctype="application/yaml", timeout=300)[0]
    yaml_s = time.monotonic() - t
    s.json("POST", CMS, {"metadata": {"name": "smp", "finalizers": []}})
    patch = json.dumps({"metadata": {"finalizers": [f"e.io/{i}" for i in range(40_000)]}})
    took = []

    def one():
        t0 = time.monotonic()
        s.request("PATCH", f"{CMS}/smp", patch, ctype="application/strategic-merge-patch+json", timeout=600)
        took.append(time.monotonic() - t0)
    ts = [threading.Thread(target=one) for _ in range(2)]
    [x.start() for x in ts]
    [x.join() for x in ts]
    return f"yaml_80k={code}/{yaml_s:.2f}s smp_40k_x2={max(took):.2f}s"


def stalled_uploads(s):
    socks = []
    for _ in range(400):
        x = raw_tls(s)
        x.sendall((f"POST {CMS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {s.token}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{").encode())
        socks.append(x)
    codes = [s.request("POST", CMS, json.dumps({"metadata": {"name": f"u{i}"}}))[0] for i in range(10)]
    for x in socks:
        x.close()
    return f"other_clients={codes}"


def main():
    for name, attack in [("deep-cr", deep_cr), ("copy-bomb", copy_bomb), ("stalled-watcher", stalled_watcher),
                         ("heavy-bodies", heavy), ("stalled-uploads", stalled_uploads)]:
        with tempfile.TemporaryDirectory() as d:
            s = Server(pathlib.Path(d) / "data")
            before = s.rss_mb()
            outcome = "?"
            with Probe(s, every=0.1) as probe:
                try:
                    outcome = attack(s)
                except Exception as e:  # a crash or hang is the figure
                    outcome = f"error: {type(e).__name__}: {str(e)[:80]}"
            alive = s.alive()
            after = s.rss_mb() if alive else 0.0
            print(f"{name:16} rss_before={before:.0f}MB peak={probe.peak_rss:.0f}MB after={after:.0f}MB "
                  f"readyz_worst={probe.worst * 1000:.0f}ms readyz_failures={probe.failures} alive={alive} {outcome}", flush=True)
            s.kill()


if __name__ == "__main__":
    main()
