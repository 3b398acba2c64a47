"""The committed stubs are exactly what generate.py makes from proto/ now."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_generated_stubs_match_proto(tmp_path):
    subprocess.run([sys.executable, str(HERE / "generate.py"), "--out", str(tmp_path)], check=True)
    fresh, committed = tmp_path / "clerk_broker", HERE / "clerk_broker"
    stale = (
        "out of date with proto/: run `.venv/bin/python client/python/generate.py` "
        "(the venv that scripts/test.sh makes) and commit the result"
    )
    assert files(fresh) == files(committed), stale
    for name in sorted(files(fresh)):
        assert filecmp.cmp(fresh / name, committed / name, shallow=False), f"{name} is {stale}"
