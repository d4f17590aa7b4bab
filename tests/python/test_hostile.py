"""Nothing a client sends can take the server down. Each case is a reproduction of an
attack that once hurt capstan, asserting upstream's answer, that /readyz keeps answering
within a second meanwhile, that memory stays bounded, and (for cases that write) that the
server restarts after a kill -9 and still serves what it accepted."""
import json
import os
import resource
import socket
import subprocess
import threading
import time

import pytest

from hostile import Probe, Server, figure, nested, raw_tls, text_depth

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "deeps.hostile.example.com"},
    "spec": {
        "group": "hostile.example.com",
        "scope": "Namespaced",
        "names": {"plural": "deeps", "singular": "deep", "kind": "Deep", "listKind": "DeepList"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}},
        }],
    },
}
DEEPS = "/apis/hostile.example.com/v1/namespaces/default/deeps"
CMS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data")
    yield s
    s.kill()


def wait_for(what, pred, within=30.0):
    deadline = time.time() + within
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def install_crd(server, crd=CRD):
    server.json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd, expect=201)
    name = crd["metadata"]["name"]

    def established():
        _, c = server.json("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        return any(x["type"] == "Established" and x["status"] == "True" for x in c.get("status", {}).get("conditions", []))
    wait_for("CRD Established", established)


def deep_cr(name, depth):
    """A Deep whose whole document nests `depth` levels (root object = 1)."""
    return ('{"apiVersion":"hostile.example.com/v1","kind":"Deep","metadata":{"name":"%s"},"spec":%s}'
            % (name, nested(depth - 1)))


def test_deep_objects_are_served_at_any_accepted_depth_and_refused_past_the_limit(server):
    install_crd(server)
    with Probe(server) as probe:
        for name, depth in [("d124", 124), ("d126", 126), ("dmax", 10_000)]:
            status, _, body = server.request("POST", DEEPS, deep_cr(name, depth))
            assert status == 201, body[:500]
        # Past the limit: 400 from every decoder, before anything recurses.
        status, _, body = server.request("POST", DEEPS, deep_cr("over", 10_001))
        assert status == 400 and b"deeper than the limit of 10000" in body, body[:300]
        yaml = "{a: " * 10_010 + "1" + "}" * 10_010
        status, _, body = server.request("POST", DEEPS, "apiVersion: hostile.example.com/v1\nkind: Deep\nmetadata: {name: y}\nspec: " + yaml, ctype="application/yaml")
        assert status == 400, body[:300]
        ok = "{a: " * 9_990 + "1" + "}" * 9_990
        status, _, body = server.request("POST", DEEPS, "apiVersion: hostile.example.com/v1\nkind: Deep\nmetadata: {name: yok}\nspec: " + ok, ctype="application/yaml")
        assert status == 201, body[:300]
        server.json("DELETE", f"{DEEPS}/yok", expect=200)
        # Patch bodies are held to the limit, and so is what a patch makes: copies can
        # nest an object deeper than any body that built it.
        status, _, body = server.request("PATCH", f"{DEEPS}/d126", '{"spec":%s}' % nested(10_000), ctype="application/merge-patch+json")
        assert status == 400 and b"deeper than the limit" in body, body[:300]
        # Each copy puts the whole branch 900 levels inside itself: 13 × 900 > 10,000.
        ops = '[{"op":"add","path":"/spec/b","value":%s}' % nested(900)
        ops += ',{"op":"copy","from":"/spec/b","path":"/spec/b%s"}' % ("/a" * 900) * 12 + "]"
        status, _, body = server.request("PATCH", f"{DEEPS}/d126", ops, ctype="application/json-patch+json")
        assert status == 400 and b"deeper than the limit" in body, body[:300]
    assert probe.worst < 1.0, f"/readyz took {probe.worst:.2f}s"

    def everything_reads():
        for name, depth in [("d124", 124), ("d126", 126), ("dmax", 10_000)]:
            status, _, body = server.request("GET", f"{DEEPS}/{name}")
            assert status == 200, body[:300]
            assert text_depth(body) >= depth
        status, _, body = server.request("GET", DEEPS)
        assert status == 200 and body.count(b'"kind":"Deep"') == 3, body[:300]
        # A watch from the start replays all three as ADDED events.
        c = server.conn(timeout=30)
        c.request("GET", f"{DEEPS}?watch=true&resourceVersion=0&timeoutSeconds=2", headers={"Authorization": f"Bearer {server.token}"})
        r = c.getresponse()
        assert r.status == 200
        events = r.read()
        assert events.count(b'"type":"ADDED"') == 3, events[:300]
        # Another CRD is still served beside them.
        other = json.loads(json.dumps(CRD).replace("deeps", "others").replace("Deep", "Other").replace('"deep"', '"other"'))
        return other

    other = everything_reads()
    install_crd(server, other)
    # The acknowledged writes survive kill -9, and the server starts with them.
    server.restart()
    everything_reads()
    # The type can be deleted with its deep objects, and a new one is empty.
    server.json("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/deeps.hostile.example.com", expect=200)
    wait_for("CRD gone", lambda: server.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/deeps.hostile.example.com")[0] == 404)
    install_crd(server)
    status, _, body = server.request("GET", DEEPS)
    assert status == 200 and b'"items":[]' in body, body[:300]
    server.restart()
    assert server.request("GET", DEEPS)[0] == 200
    figure("deep-objects", readyz_worst_ms=probe.worst * 1000, rss_mb=server.rss_mb())


def test_a_json_patch_copy_bomb_is_refused_quickly(server):
    server.json("POST", CMS, {"metadata": {"name": "bomb"}, "data": {"x": "y" * 16}}, expect=201)
    # Each copy doubles the object: 40 of them would need 2^40 × 16 bytes.
    ops = [{"op": "add", "path": "/data/a", "value": "x" * 16}]
    ops.append({"op": "add", "path": "/metadata/annotations", "value": {"a": ["x" * 16]}})
    ops += [{"op": "copy", "from": "/metadata/annotations/a", "path": "/metadata/annotations/a/-"} for _ in range(40)]
    body = json.dumps(ops)
    rss_before = server.rss_mb()
    with Probe(server) as probe:
        t0 = time.monotonic()
        status, _, resp = server.request("PATCH", f"{CMS}/bomb", body, ctype="application/json-patch+json")
        took = time.monotonic() - t0
    assert status == 422, resp[:300]
    assert b"exceed the limit of 3145728 bytes" in resp
    assert took < 2.0 and probe.worst < 1.0
    # Too many operations is upstream's 422 too.
    many = json.dumps([{"op": "test", "path": "/metadata/name", "value": "bomb"}] * 10_001)
    status, _, resp = server.request("PATCH", f"{CMS}/bomb", many, ctype="application/json-patch+json")
    assert status == 422 and b"The allowed maximum operations in a JSON patch is 10000, got 10001" in resp, resp[:300]
    rss_after = server.rss_mb()
    assert rss_after < rss_before + 64, (rss_before, rss_after)
    figure("json-patch-copy-bomb", ms=took * 1000, rss_before_mb=rss_before, rss_after_mb=rss_after, readyz_worst_ms=probe.worst * 1000)
    # Merge patches cannot amplify, but repeated ones could grow one object without end:
    # a stored object is bounded (413 past 6 MiB).
    codes = []
    for i in range(4):
        status, _, resp = server.request("PATCH", f"{CMS}/bomb", json.dumps({"data": {f"k{i}": "z" * (2 << 20)}}), ctype="application/merge-patch+json")
        codes.append(status)
    assert codes == [200, 200, 413, 413], codes
    assert b"larger than the 6291456 byte limit" in resp, resp[:300]
    server.restart()
    status, cm = server.json("GET", f"{CMS}/bomb", expect=200)
    assert sorted(cm["data"]) == ["k0", "k1", "x"]


def test_a_crafted_json_patch_is_a_422_not_a_dropped_connection(server):
    server.json("POST", CMS, {"metadata": {"name": "mv", "labels": {"a": "b"}}, "data": {"k": "v"}}, expect=201)
    ops = [{"op": "move", "from": "/metadata/labels", "path": "/metadata"},
           {"op": "remove", "path": "/nothing/here"}]
    status, _, resp = server.request("PATCH", f"{CMS}/mv", json.dumps(ops), ctype="application/json-patch+json")
    assert status == 422, resp[:300]
    doc = json.loads(resp)
    assert doc["kind"] == "Status" and doc["reason"] == "Invalid"
    _, cm = server.json("GET", f"{CMS}/mv", expect=200)
    assert cm["metadata"]["labels"] == {"a": "b"} and cm["data"] == {"k": "v"}


def test_a_watcher_that_never_reads_pins_no_memory(server):
    payload = "x" * (1 << 20)
    server.json("POST", CMS, {"metadata": {"name": "big"}, "data": {"v": payload}}, expect=201)
    # A watcher that sends its request and then never reads a byte.
    stalled = raw_tls(server)
    stalled.sendall((f"GET {CMS}?watch=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n\r\n").encode())
    base = server.rss_mb()
    writes = int(os.environ.get("HOSTILE_BIG_WRITES", "400"))
    with Probe(server, every=0.25) as probe:
        c = server.conn()
        for i in range(writes):
            body = json.dumps({"data": {"v": payload[:-8] + f"{i:08d}"}}).encode()
            c.request("PATCH", f"{CMS}/big", body=body, headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/merge-patch+json"})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
        c.close()
    peak = probe.peak_rss
    # Before: every one of the writes stayed queued for the stalled watcher (1.8 GiB for
    # 1,000). Now its queue is cut off at 16 MiB and its response buffer at 4 MiB.
    assert peak < base + 300, (base, peak)
    stalled.close()
    wait_for("memory returned", lambda: server.rss_mb() < base + 120, within=40)
    after = server.rss_mb()
    assert probe.worst < 1.0, probe.worst
    figure("stalled-watcher", writes=writes, mib_each=1, rss_base_mb=base, rss_peak_mb=peak, rss_after_mb=after, readyz_worst_ms=probe.worst * 1000)
    server.restart()
    _, cm = server.json("GET", f"{CMS}/big", expect=200)
    assert cm["data"]["v"].endswith(f"{writes - 1:08d}")


def test_heavy_bodies_do_not_stall_probes_or_other_clients(server):
    # 80,000 levels of YAML (160 KB): refused at the depth limit, at once.
    deep_yaml = "a: " + "[" * 80_000 + "]" * 80_000
    with Probe(server, every=0.05) as probe:
        t0 = time.monotonic()
        status, _, resp = server.request("POST", CMS, deep_yaml, ctype="application/yaml")
        yaml_ms = (time.monotonic() - t0) * 1000
        assert status == 400, resp[:300]
        # Strategic merge patches of 150,000 list items, two at once, while a third client
        # keeps working: they are linear now and run off the reactor threads.
        server.json("POST", CMS, {"metadata": {"name": "smp", "finalizers": []}}, expect=201)
        patch = json.dumps({"metadata": {"finalizers": [f"e.io/{i}" for i in range(150_000)]}})
        results = []

        def smp():
            t = time.monotonic()
            st, _, body = server.request("PATCH", f"{CMS}/smp", patch, ctype="application/strategic-merge-patch+json", timeout=120)
            results.append((st, time.monotonic() - t, body[:200]))
        threads = [threading.Thread(target=smp) for _ in range(2)]
        for t in threads:
            t.start()
        other = []
        while any(t.is_alive() for t in threads):
            t = time.monotonic()
            server.json("GET", f"{CMS}/smp", expect=200)
            other.append(time.monotonic() - t)
        for t in threads:
            t.join()
    for st, took, body in results:
        assert st in (200, 422), (st, body)
    assert probe.worst < 1.0, probe.worst
    smp_s = max(r[1] for r in results)
    assert smp_s < 30, smp_s
    rss = server.rss_mb()
    figure("heavy-bodies", yaml_80k_ms=yaml_ms, smp_150k_two_at_once_s=smp_s, readyz_worst_ms=probe.worst * 1000, other_client_worst_ms=max(other, default=0) * 1000, rss_mb=rss)
    assert probe.peak_rss < 1024, probe.peak_rss
    server.restart()
    server.json("GET", f"{CMS}/smp", expect=200)


def test_namespaces_collection_cannot_be_deleted_and_system_ones_are_immortal(server):
    status, _, resp = server.request("DELETE", "/api/v1/namespaces")
    assert status == 405, resp[:300]
    for ns in ["default", "kube-system", "kube-public"]:
        status, _, resp = server.request("DELETE", f"/api/v1/namespaces/{ns}")
        assert status == 403 and b"this namespace may not be deleted" in resp, (ns, resp[:300])
    server.restart()
    _, svc = server.json("GET", "/api/v1/namespaces/default/services/kubernetes", expect=200)
    assert svc["metadata"]["name"] == "kubernetes"


def test_stalled_uploads_and_idle_strangers_do_not_starve_other_clients(tmp_path):
    # This process opens ~1,900 sockets.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    server = Server(tmp_path / "d", extra=["--max-requests-inflight", "50"])
    try:
        # 400 uploads that send their headers and one byte of a promised 1 MB body.
        stalled = []
        for _ in range(400):
            s = raw_tls(server)
            s.sendall((f"POST {CMS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
                       "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{").encode())
            stalled.append(s)
        # 1,500 TCP connections that never even start TLS.
        idle = []
        for _ in range(1500):
            try:
                idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            except OSError:
                break
        # Everyone else is served, not told 429.
        for i in range(20):
            server.json("POST", CMS, {"metadata": {"name": f"ok-{i}"}}, expect=201)
        status, lst = server.json("GET", CMS, expect=200)
        assert len([i for i in lst["items"] if i["metadata"]["name"].startswith("ok-")]) == 20
        # The strangers past the cap were closed at once, the rest when their handshake
        # time ran out (10 s).
        def closed(sock):
            try:
                sock.settimeout(0.01)
                return sock.recv(1) == b""
            except socket.timeout:
                return False
            except OSError:
                return True
        wait_for("idle strangers closed", lambda: all(closed(s) for s in idle), within=30)
        # The stalled uploads (authenticated, bodies never finished) held no place among the
        # 50 requests in flight: the 20 creates above were all served.
        fds = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
        figure("stalled-uploads", uploads=len(stalled), idle_connections=len(idle), server_fds=fds)
        for s in idle + stalled:
            s.close()
        assert server.rss_mb() < 200, server.rss_mb()
        server.restart()
        status, lst = server.json("GET", CMS, expect=200)
        assert len([i for i in lst["items"] if i["metadata"]["name"].startswith("ok-")]) == 20
    finally:
        server.kill()


def test_only_real_watches_skip_the_request_limit_and_they_have_their_own(tmp_path):
    # The server's own scheduler and controllers watch too, over the in-process client:
    # they take no places, so clients still get both of theirs.
    server = Server(tmp_path / "d", extra=["--max-watches", "2"])
    try:
        watches = []
        for _ in range(2):
            s = raw_tls(server)
            s.sendall(f"GET {CMS}?watch=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n\r\n".encode())
            assert s.recv(64).startswith(b"HTTP/1.1 200")
            watches.append(s)
        status, _, resp = server.request("GET", f"{CMS}?watch=true")
        assert status == 429, resp[:200]
        # ?watch=true on a create is an ordinary create, counted like one.
        status, _, resp = server.request("POST", f"{CMS}?watch=true", json.dumps({"metadata": {"name": "w"}}))
        assert status == 201, resp[:200]
        watches.pop().close()
        wait_for("a watch place frees", lambda: server.request("GET", f"{CMS}?watch=true&timeoutSeconds=1")[0] == 200)
        server.restart()
        server.json("GET", f"{CMS}/w", expect=200)
    finally:
        server.kill()


def test_a_full_disk_refuses_writes_cleanly_and_restarts(tmp_path):
    assert os.geteuid() == 0, "this case mounts a small tmpfs: run the suite as root (CI does)"
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    server = None
    try:
        server = Server(mnt / "data")
        server.json("POST", CMS, {"metadata": {"name": "before"}, "data": {"k": "v"}}, expect=201)
        filler = mnt / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        codes = set()
        for i in range(40):
            status, _, resp = server.request("POST", CMS, json.dumps({"metadata": {"name": f"full-{i}"}, "data": {"v": "x" * 200_000}}))
            codes.add(status)
            if status != 201:
                doc = json.loads(resp)
                assert doc["kind"] == "Status" and status == 507 and "out of space" in doc["message"], resp[:300]
        assert 507 in codes, codes
        status, _, body = server.request("GET", "/readyz?verbose", auth=False)
        assert status == 500 and b"[-]storage-writable failed" in body and b"out of space" in body, body
        # Reads still work, and a restart on the full disk comes up with every acked write.
        server.json("GET", f"{CMS}/before", expect=200)
        server.restart()
        assert not (mnt / "data" / "kubeconfig.tmp").exists()
        server.json("GET", f"{CMS}/before", expect=200)
        # Space back: writes resume and readiness recovers.
        filler.unlink()
        server.json("POST", CMS, {"metadata": {"name": "after"}}, expect=201)
        wait_for("ready again", lambda: server.request("GET", "/readyz", auth=False)[0] == 200)
    finally:
        if server:
            server.kill()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_duplicate_keys_get_a_bounded_set_of_warnings(server):
    body = '{"metadata":{"name":"dups"},' + ",".join('"data":{}' for _ in range(300_000)) + "}"
    status, headers, resp = server.request("POST", CMS, body, timeout=60)
    assert status == 201, resp[:300]
    warnings = [v for k, v in headers if k.lower() == "warning"]
    # One distinct duplicate, so one warning (upstream's recorder dedupes and caps them).
    assert warnings == ['299 - "duplicate field \\"data\\""'], warnings[:3]
    assert server.rss_mb() < 200
    server.restart()
    server.json("GET", f"{CMS}/dups", expect=200)
