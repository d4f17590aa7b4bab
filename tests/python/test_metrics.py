"""/metrics in the Prometheus text format, read by the official Python client's API
plumbing and parsed by prometheus_client's text parser."""
import time

from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families


def scrape(api):
    if hasattr(api, "param_serialize"):  # the client's newer generated plumbing
        params = api.param_serialize(method="GET", resource_path="/metrics", auth_settings=["BearerToken"])
        resp = api.call_api(*params)
        resp.read()
        ctype, text = resp.getheader("Content-Type"), resp.data.decode()
    else:
        resp = api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False)[0]
        ctype, text = resp.headers["Content-Type"], resp.data.decode()
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, **labels):
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def total(family, **labels):
    return sum(s.value for s in samples(family, **labels))


def wait_for_root_ca(core):
    """The root-CA publisher writes kube-root-ca.crt into every namespace at start (its
    requests are counted too): let it finish, so the test counts only its own."""
    deadline = time.monotonic() + 30
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"]:
        while True:
            try:
                core.read_namespaced_config_map("kube-root-ca.crt", ns)
                break
            except ApiException as e:
                assert e.status == 404 and time.monotonic() < deadline, e
                time.sleep(0.05)


def test_metrics_count_requests_by_verb_resource_and_code(capstan):
    core = client.CoreV1Api(capstan)
    wait_for_root_ca(core)
    before = scrape(capstan)
    for i in range(3):
        core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"m{i}")))
    try:
        core.read_namespaced_config_map("absent", "default")
    except ApiException as e:
        assert e.status == 404
    core.list_namespaced_config_map("default")
    m = scrape(capstan)

    req = m["apiserver_request"]
    assert req.type == "counter"
    delta = lambda fam, **labels: total(m[fam], **labels) - total(before[fam], **labels)
    created = samples(req, verb="POST", resource="configmaps", code="201", scope="namespace")
    assert created and delta("apiserver_request", verb="POST", resource="configmaps", code="201", scope="namespace") == 3.0, created
    assert delta("apiserver_request", verb="GET", resource="configmaps", code="404", scope="resource") == 1.0
    assert samples(req, verb="LIST", resource="configmaps", code="200")

    lat = m["apiserver_request_duration_seconds"]
    assert lat.type == "histogram"
    count = [s for s in samples(lat, verb="POST", resource="configmaps") if s.name.endswith("_count")]
    before_count = [s for s in samples(before["apiserver_request_duration_seconds"], verb="POST", resource="configmaps") if s.name.endswith("_count")]
    assert sum(s.value for s in count) - sum(s.value for s in before_count) == 3.0, count
    inf = lambda fam: sum(s.value for s in samples(fam, verb="POST", resource="configmaps") if s.name.endswith("_bucket") and s.labels["le"] == "+Inf")
    assert inf(lat) - inf(before["apiserver_request_duration_seconds"]) == 3.0

    assert m["process_resident_memory_bytes"].samples[0].value > 1_000_000
    assert m["process_open_fds"].samples[0].value > 3
    assert m["process_cpu_seconds"].samples[0].value >= 0
    assert m["capstan_store_revision"].samples[0].value >= 4
    # The scrape itself is the one request in flight.
    assert m["apiserver_current_inflight_requests"].samples[0].value == 1
    # Long-running requests are counted by verb and resource, as upstream does, so a
    # client's watch of configmaps is told apart from the built-in scheduler's watches.
    def open_watches():
        lr = scrape(capstan)["apiserver_longrunning_requests"]
        return sum(s.value for s in samples(lr, verb="WATCH", resource="configmaps", scope="namespace"))
    assert open_watches() == 0
    watch = core.list_namespaced_config_map("default", watch=True, timeout_seconds=30, _preload_content=False)
    try:
        deadline = time.monotonic() + 10
        while open_watches() != 1:
            assert time.monotonic() < deadline, "the watch was never counted"
            time.sleep(0.05)
    finally:
        watch.close()
    deadline = time.monotonic() + 10
    while open_watches() != 0:
        assert time.monotonic() < deadline, "the closed watch is still counted"
        time.sleep(0.05)


def test_metrics_need_credentials(capstan):
    import urllib3
    host = capstan.configuration.host
    http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=capstan.configuration.ssl_ca_cert)
    r = http.request("GET", f"{host}/metrics")
    assert r.status == 403
