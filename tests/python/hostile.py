"""Harness for the hostile-input suite: a capstan server on a data dir of its own, raw
HTTPS requests (crafted bodies a typed client would never send), its RSS, and a probe that
measures how fast /readyz answers while an attack runs. Figures go to stdout as
`FIGURE name key=value …` lines (the suite prints them with -s; the notes quote them)."""
import base64
import http.client
import json
import os
import pathlib
import socket
import ssl
import subprocess
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def binary():
    return os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))


class Server:
    def __init__(self, data_dir, extra=()):
        self.data_dir = pathlib.Path(data_dir)
        self.extra = list(extra)
        self.proc = None
        self.port = None
        self.start()

    def start(self, port=0):
        self.proc = subprocess.Popen(
            [binary(), "server", "--no-agent", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{port}", *self.extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        assert line == f"export KUBECONFIG={self.data_dir / 'kubeconfig'}", f"server did not start: {line!r}"
        kc = (self.data_dir / "kubeconfig").read_text()
        server = next(l.split("server:")[1].strip() for l in kc.splitlines() if "server:" in l)
        self.port = int(server.rsplit(":", 1)[1])
        ca = next(l.split("certificate-authority-data:")[1].strip() for l in kc.splitlines() if "certificate-authority-data" in l)
        self.token = next(l.split("token:")[1].strip() for l in kc.splitlines() if "token:" in l)
        self.ctx = ssl.create_default_context(cadata=base64.b64decode(ca).decode())

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self):
        """kill -9, then start again on the same data dir and port."""
        port = self.port
        self.kill()
        self.start(port)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def conn(self, timeout=60):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)

    def request(self, method, path, body=None, ctype="application/json", headers=None, timeout=60, auth=True):
        """(status, headers, body bytes) — the response as a client sees it."""
        h = {"Accept": "application/json"}
        if auth:
            h["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            h["Content-Type"] = ctype
            if isinstance(body, str):
                body = body.encode()
        h.update(headers or {})
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            c.close()

    def json(self, method, path, obj=None, ctype="application/json", expect=None, **kw):
        body = None if obj is None else (obj if isinstance(obj, (bytes, str)) else json.dumps(obj))
        status, headers, data = self.request(method, path, body, ctype, **kw)
        # Python's parser gives up near 1,000 levels; deep documents stay bytes.
        parsed = json.loads(data) if data[:1] in (b"{", b"[") and text_depth(data[:200_000]) < 500 else data
        if expect is not None:
            assert status == expect, f"{method} {path}: {status} {data[:2000]!r}"
        return status, parsed

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def wait_ready(self, within=30):
        deadline = time.time() + within
        while time.time() < deadline:
            try:
                if self.request("GET", "/readyz", auth=False, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("server not ready")


class Probe:
    """Polls /readyz (and watches RSS) on a thread of its own while an attack runs."""

    def __init__(self, server, every=0.1):
        self.server = server
        self.every = every
        self.latencies = []
        self.failures = 0
        self.peak_rss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                status = self.server.request("GET", "/readyz", auth=False, timeout=5)[0]
                if status != 200:
                    self.failures += 1
            except OSError:
                self.failures += 1
            self.latencies.append(time.monotonic() - t0)
            try:
                self.peak_rss = max(self.peak_rss, self.server.rss_mb())
            except OSError:
                pass
            self._stop.wait(self.every)

    @property
    def worst(self):
        return max(self.latencies, default=0.0)

    def p99(self):
        xs = sorted(self.latencies)
        return xs[int(len(xs) * 0.99)] if xs else 0.0


def figure(name, **kv):
    print("FIGURE " + name + " " + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()), flush=True)


def nested(depth, leaf=1):
    """JSON text of `depth` nested objects {"a": {"a": … leaf}}."""
    return '{"a":' * depth + json.dumps(leaf) + "}" * depth


def text_depth(data):
    """Nesting depth of JSON text, without parsing it (Python's parser stops near 1,000)."""
    depth = best = 0
    in_str = esc = False
    for b in data:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            best = max(best, depth)
        elif b in (0x5D, 0x7D):
            depth -= 1
    return best


def raw_tls(server):
    """An authenticated-capable TLS socket to the server, for hand-written requests."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return server.ctx.wrap_socket(s, server_hostname="127.0.0.1")
