"""The README's curl commands for the Clerk-compatible front work as written,
against the demo broker (only its address is substituted: port 8090 may be
taken), and answer what Clerk would."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from conftest import REPO

README_ADDRESS = "127.0.0.1:8090"


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = re.search(
        r"^## Using Clerk's SDKs through the broker\n(.*?)(?=^## )", text, re.S | re.M
    )
    assert section, "README.md has no 'Using Clerk's SDKs through the broker' section"
    blocks = re.findall(r"```sh\n(.*?)```", section.group(1), re.S)
    assert blocks, "the section has no ```sh block"
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def check(command: str, answer) -> None:
    """What each command must answer, in Clerk's shapes."""
    if "/v1/users/count" in command:
        assert answer["object"] == "total_count" and answer["total_count"] > 0, answer
    elif "/v1/users?" in command:
        assert isinstance(answer, list) and len(answer) == 1, answer
        assert answer[0]["object"] == "user", answer
    elif "/v1/users/" in command:
        assert answer["object"] == "user" and answer["id"] in command, answer
    else:
        raise AssertionError(f"no expectation for {command}")


def test_every_readme_curl_command_works(demo):
    assert shutil.which("curl"), "curl is not installed"
    commands = readme_commands()
    assert len(commands) >= 3, commands
    for command in commands:
        assert command.startswith("curl "), command
        assert README_ADDRESS in command, command
        runnable = command.replace(README_ADDRESS, demo.front_address)
        done = subprocess.run(
            ["sh", "-c", runnable + " --fail-with-body"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        check(command, json.loads(done.stdout))
    ids = set(re.findall(r"user_[A-Za-z0-9]{20,}", " ".join(commands)))
    assert ids and ids <= set(demo.sample_ids), (ids, demo.sample_ids)
