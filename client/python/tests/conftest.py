"""One real broker in demo mode for the whole session, started from the
binary (CLERK_BROKER_BIN, which scripts/test.sh sets, or else built with
cargo), on 127.0.0.1:0; its address is read from the banner it prints."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from clerk_broker_client import Client

REPO = Path(__file__).resolve().parents[3]
# The demo's budget: generous, and all of it may be taken at once, so that a
# test can exhaust it with one permit (see test_resource_exhausted...).
BUDGET = "1000/1s"


def broker_binary() -> Path:
    """The broker binary: $CLERK_BROKER_BIN, or a fresh `cargo build`."""
    if path := os.environ.get("CLERK_BROKER_BIN"):
        return Path(path)
    build = subprocess.run(
        ["cargo", "build", "--bin", "clerk-broker", "--message-format=json-render-diagnostics"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    for line in build.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            if message["target"]["name"] == "clerk-broker":
                return Path(message["executable"])
    raise RuntimeError("cargo built no clerk-broker binary")


@dataclass
class Demo:
    """A running demo broker."""

    process: subprocess.Popen
    #: host:port it serves on.
    address: str
    #: The banner's sample user ids (from the demo's fixed seed).
    sample_ids: list[str]
    #: Everything it printed on stderr (its log).
    log: Path
    #: host:port of its Clerk-compatible Backend API.
    front_address: str

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_demo(log: Path) -> Demo:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLERK_")}
    env.update(CLERK_BROKER_UPSTREAM_RATE=BUDGET, CLERK_BROKER_UPSTREAM_BURST=BUDGET.split("/")[0])
    process = subprocess.Popen(
        [
            str(broker_binary()),
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--clerk-api-listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        env=env,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:  # keeps draining stdout so the broker never blocks on it
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    banner = []
    try:
        while not banner or not banner[-1].startswith("Press Ctrl-C"):
            banner.append(lines.get(timeout=60))
    except queue.Empty:
        process.kill()
        raise RuntimeError(f"the demo printed no banner; its log:\n{log.read_text()}") from None
    address = re.search(r"serving gRPC on (\S+)", banner[0]).group(1)
    batch = next(line for line in banner if "BatchGetUsers" in line)
    sample_ids = re.findall(r'"(user_[A-Za-z0-9]{20,})"', batch)  # not user_ids, user_doesnotexist
    front_address = next(
        re.search(r"Clerk-compatible Backend API on http://(\S+)", line).group(1)
        for line in banner
        if "Clerk-compatible Backend API on" in line
    )
    return Demo(process, address, sample_ids, log, front_address)


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Demo:
    demo = start_demo(tmp_path_factory.mktemp("broker") / "broker.log")
    yield demo
    assert demo.stop() == 0, "the broker exits 0 after SIGTERM"


@pytest.fixture
def client(demo: Demo) -> Client:
    with Client(demo.address) as client:
        yield client
