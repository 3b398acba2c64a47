"""The README's "Trying it with grpcurl" commands work as written, against
the demo broker (only its address is substituted: port 50051 may be taken)."""

from __future__ import annotations

import re
import shutil
import subprocess

from conftest import REPO

README_ADDRESS = "127.0.0.1:50051"


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Trying it with grpcurl\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no 'Trying it with grpcurl' section"
    blocks = re.findall(r"```sh\n(.*?)```", section.group(1), re.S)
    assert blocks, "the section has no ```sh block"
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def expected_output(command: str) -> str:
    """What each kind of command must print."""
    if command.endswith(" list"):
        return "clerk_broker.v1.UserService"
    if " describe " in command:
        return "rpc GetUser"
    if "Health/Check" in command:
        return '"status": "SERVING"'
    if "grep '^x-cache'" in command:
        return "x-cache: "
    if "/InvalidateUser" in command:
        return '"wasCached"'
    if "/GetUser" in command or "/BatchGetUsers" in command:
        return '"id": "user_'
    if "/ListUsers" in command:
        return '"resumeToken"'
    if "/CountUsers" in command:
        return '"totalCount"'
    if "/AcquirePermit" in command:
        return '"granted": true'
    raise AssertionError(f"no expectation for {command}")


def test_every_readme_grpcurl_command_works(demo):
    assert shutil.which("grpcurl"), "grpcurl is not installed: run ./scripts/test.sh, which installs it"
    commands = readme_commands()
    assert len(commands) >= 8, commands
    for command in commands:
        assert command.startswith("grpcurl "), command
        assert README_ADDRESS in command, command
        runnable = command.replace(README_ADDRESS, demo.address)
        done = subprocess.run(["sh", "-c", runnable], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        assert expected_output(command) in done.stdout, f"{command}\n{done.stdout}"


def test_the_readme_ids_exist_in_the_demo(demo):
    """The ids in the README are the demo's first seeded users."""
    ids = set(re.findall(r"user_[A-Za-z0-9]{20,}", " ".join(readme_commands())))
    assert ids and ids <= set(demo.sample_ids), (ids, demo.sample_ids)
