"""`hub demo` (what `make demo` runs): exits 0, prints both histories, leaves nothing running."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers import REPO


def _processes_with(marker: str) -> list[int]:
    """Pids whose environment carries ``marker``: anything the demo started and left running."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_demo_runs_the_whole_loop_and_cleans_up(tmp_path):
    marker = f"HUB_DEMO_MARKER={uuid.uuid4().hex}"
    production = tmp_path / "agencies"  # an operator's own agency files, one of them a real endpoint
    production.mkdir()
    scjg = (REPO / "contracts" / "agencies" / "scjg.toml").read_text("utf-8")
    (production / "prodx.toml").write_text(scjg.replace('code = "SCJG"', 'code = "PRODX"'), "utf-8")
    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path), "HUB_AGENCIES_DIR": str(production),
           marker.split("=")[0]: marker.split("=")[1]}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "demo"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    clean, _, penalised = out.partition("天津市南开区乙旅馆有限公司  USCC")
    assert "天津南开甲餐饮管理有限公司" in clean and "none on record" in clean
    agencies = {line.split()[1] for line in penalised.splitlines() if line.startswith("    2026-") and "罚" in line}
    # REST (SCJG/GAFJ), SOAP (GSJ/DSJ) and a file drop (XFZD) all reported penalties for this company
    assert agencies & {"SCJG", "GAFJ"} and agencies & {"GSJ", "DSJ"} and "XFZD" in agencies
    assert "quarantined" in out
    assert ": GREEN" in clean and (": AMBER" in penalised or ": RED" in penalised)
    assert _processes_with(marker) == []  # no sandbox or worker process outlives the demo
    assert "PRODX" not in out  # the demo talks to its sandbox agencies only, whatever HUB_AGENCIES_DIR says
