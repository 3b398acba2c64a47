"""Every shell command the README shows runs as written, on a clean copy of
the repository, against the session's demo broker.

Each ```sh block of README.md is preceded by a marker comment:

    <!-- readme-test: run -->                       run every command of the block
    <!-- readme-test: skip (reason) -->             skip the whole block
    <!-- readme-test: skip "text" (reason) -->      (after `run`) skip the command containing text

A block without a marker fails the test, and every skipped command is
reported by name with its reason (pytest's -ra summary). Each command runs
with `sh -c`, from the root of a clean copy of the repository (the files
`git ls-files` lists, tracked or untracked but not ignored, as they are in
the working tree, modification times kept), so the client set-up lines
(`python3 -m venv .venv && …`, `npm --prefix client/node install && …`)
start from nothing as on a fresh checkout. Only the addresses change: the
README's 127.0.0.1:50051 (gRPC) and 127.0.0.1:8090 (the Clerk-compatible
front) become the demo's, and CLERK_BROKER_URL names it for commands that
rely on the default address. Caches: pip's and npm's own, and cargo builds
into the repository's target/ (CARGO_TARGET_DIR; the copy keeps the files'
times, so what is already built is not rebuilt).

Run alone, from the repository root: `PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m pytest
client/python/tests/test_readme.py` (grpcurl, curl, cargo, node and npm on PATH).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO

GRPC_ADDRESS = "127.0.0.1:50051"
FRONT_ADDRESS = "127.0.0.1:8090"
MARKER = re.compile(r"<!-- readme-test: (.*?) -->")
SKIP_ONE = re.compile(r'skip "(.+?)" \((.+)\)$')
SKIP_ALL = re.compile(r"skip \((.+)\)$")


@dataclass
class Command:
    """One command of a README block."""

    #: The command as the README shows it (continuation lines joined).
    text: str
    #: README.md line where it starts.
    line: int
    #: Why it is not run, or None.
    skip: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def readme_blocks(text: str) -> list[list[Command]]:
    """The README's ```sh blocks, their commands and markers."""
    lines = text.splitlines()
    blocks = []
    for index, line in enumerate(lines):
        if line.strip() != "```sh":
            continue
        markers = []
        above = index - 1
        while above >= 0 and (found := MARKER.fullmatch(lines[above].strip())):
            markers.insert(0, found.group(1))
            above -= 1
        assert markers, (
            f"README.md:{index + 1}: a ```sh block without a <!-- readme-test: … --> marker"
        )
        block_skip, line_skips = None, {}
        for marker in markers:
            if marker == "run":
                continue
            if found := SKIP_ONE.fullmatch(marker):
                line_skips[found.group(1)] = found.group(2)
            elif found := SKIP_ALL.fullmatch(marker):
                block_skip = found.group(1)
            else:
                raise AssertionError(f"README.md:{index + 1}: unknown marker {marker!r}")
        commands, pending, start = [], "", 0
        for number in range(index + 1, len(lines)):
            if lines[number].strip() == "```":
                break
            if not lines[number].strip():
                continue
            if not pending:
                start = number + 1
            pending += lines[number]
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            skip = block_skip or next((w for key, w in line_skips.items() if key in pending), None)
            commands.append(Command(pending.strip(), start, skip))
            pending = ""
        else:
            raise AssertionError(f"README.md:{index + 1}: unclosed ```sh block")
        for key in line_skips:
            assert any(key in c.text for c in commands), f"README.md:{index + 1}: no command has {key!r}"
        blocks.append(commands)
    return blocks


README_COMMANDS = [c for block in readme_blocks((REPO / "README.md").read_text()) for c in block]


def check_front(command: str, stdout: str, copy: Path) -> None:
    """The Clerk-compatible front answers in Clerk's shapes."""
    answer = json.loads(stdout)
    if "/v1/users/count" in command:
        assert answer["object"] == "total_count" and answer["total_count"] > 0, answer
    elif "/v1/users?" in command:
        assert isinstance(answer, list) and len(answer) == 1, answer
        assert answer[0]["object"] == "user", answer
    else:
        assert answer["object"] == "user" and answer["id"] in command, answer


def check_export(command: str, stdout: str, copy: Path) -> None:
    """clerk-broker-cli wrote every demo user, one JSON object a line."""
    lines = (copy / "users.jsonl").read_text().splitlines()
    assert len(lines) == 10_000, len(lines)
    assert all(json.loads(line)["id"].startswith("user_") for line in lines[:10])


HELLO = ["user: user_WjqhESHrprLoQRaGgNMIoIuAr9n", "exported: user_", "permit granted on clerk"]

# What each command must print (on stdout), by a fragment of the command: the
# first that matches. A run command that matches none fails the test.
EXPECTED: list[tuple[str, object]] = [
    ("clerk-broker-cli", check_export),
    ("client/python/examples/hello.py", HELLO),
    ("client/node/examples/hello.js", HELLO),
    ("grep '^x-cache'", ["x-cache: "]),
    (" list", ["clerk_broker.v1.UserService"]),
    (" describe ", ["rpc GetUser"]),
    ("Health/Check", ['"status": "SERVING"']),
    ("/InvalidateUser", ['"wasCached"']),
    ("/GetUser", ['"id": "user_']),
    ("/BatchGetUsers", ['"id": "user_', '"missingUserIds"']),
    ("/ListUsers", ['"resumeToken"']),
    ("/CountUsers", ['"totalCount"']),
    ("/AcquirePermit", ['"granted": true']),
    ("curl ", check_front),
]


def expectation(command: str):
    return next((want for key, want in EXPECTED if key in command), None)


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory) -> Path:
    """The repository's files as a fresh checkout would hold them, plus the
    working tree's uncommitted changes; nothing ignored (no .venv, no
    node_modules, no target)."""
    copy = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy / name, follow_symlinks=False)
    return copy


def newcomer_path(copy: Path) -> str:
    """PATH without virtualenvs (this suite runs in the repository's .venv,
    whose packages a newcomer does not have), plus grpcurl, which the README
    assumes installed, wherever it was found."""
    tools = copy.parent / "tools"
    tools.mkdir(exist_ok=True)
    grpcurl = shutil.which("grpcurl")
    assert grpcurl, "grpcurl is not installed: run ./scripts/test.sh, which installs it"
    if not (tools / "grpcurl").exists():
        (tools / "grpcurl").symlink_to(grpcurl)
    kept = [
        d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d).parent / "pyvenv.cfg").exists()
    ]
    return os.pathsep.join([*kept, str(tools)])


@pytest.mark.parametrize("command", README_COMMANDS, ids=lambda c: f"L{c.line}")
def test_readme_command(command: Command, demo, clean_copy: Path):
    if command.skip:
        pytest.skip(f"{command} -- {command.skip}")
    want = expectation(command.text)
    assert want is not None, f"{command}: no expectation in EXPECTED (test_readme.py)"
    runnable = command.text.replace(GRPC_ADDRESS, demo.address).replace(FRONT_ADDRESS, demo.front_address)
    if runnable.startswith("curl "):
        runnable += " --fail-with-body"  # an HTTP error status fails the command
    env = dict(os.environ, CLERK_BROKER_URL=f"http://{demo.address}", PATH=newcomer_path(clean_copy))
    env.setdefault("CARGO_TARGET_DIR", str(REPO / "target"))
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        ["sh", "-c", runnable], cwd=clean_copy, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    if callable(want):
        want(command.text, done.stdout, clean_copy)
    else:
        for fragment in want:
            assert fragment in done.stdout, f"{command}: no {fragment!r} in\n{done.stdout}"


def test_the_readme_is_tested():
    """The blocks that used to be tested one by one are still run."""
    run = [c.text for c in README_COMMANDS if not c.skip]
    assert sum(c.startswith("grpcurl ") for c in run) >= 10, run
    assert sum(c.startswith("curl ") for c in run) >= 3, run
    assert any("hello.py" in c for c in run) and any("hello.js" in c for c in run), run


def test_the_readme_ids_exist_in_the_demo(demo):
    """The ids in the README's commands are the demo's first seeded users."""
    ids = set(re.findall(r"user_[A-Za-z0-9]{20,}", " ".join(c.text for c in README_COMMANDS)))
    assert ids and ids <= set(demo.sample_ids), (ids, demo.sample_ids)
