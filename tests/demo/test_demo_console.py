"""The demo's stage runner: the whole output in the log, progress lines and a heartbeat on the console."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from deltalm.demo_console import StageFailed, run_stage_command

SCRIPT = """
import time
print("loading things", flush=True)
print("step 1/2 | loss 5.0000 | eta 0:01", flush=True)
time.sleep(2.5)
print("step 2/2 | loss 4.0000 | eta 0:00", flush=True)
"""


def run(tmp_path: Path, script: str) -> tuple[list[str], Path]:
    shown: list[str] = []
    log = tmp_path / "logs" / "stage.log"
    run_stage_command(
        [sys.executable, "-c", script], log, cwd=tmp_path, env=dict(os.environ), say=shown.append, quiet_s=1.0
    )
    return shown, log


def test_progress_lines_and_heartbeat_on_the_console_everything_in_the_log(tmp_path):
    shown, log = run(tmp_path, SCRIPT)
    assert shown[1] == f"  log: {log}"
    assert "  step 1/2 | loss 5.0000 | eta 0:01" in shown and "  step 2/2 | loss 4.0000 | eta 0:00" in shown
    assert not any("loading things" in line for line in shown[2:])  # not a progress line: the log only
    heartbeat = [line for line in shown if "running," in line]
    assert heartbeat and f"elapsed (log: {log})" in heartbeat[0]
    text = log.read_text()
    assert "loading things" in text and "step 2/2" in text


def test_failure_quotes_the_log(tmp_path):
    with pytest.raises(StageFailed, match=r"exit 3\); see .*stage.log:\n(.|\n)*\n  boom$"):
        run(tmp_path, "import sys; print('boom'); sys.exit(3)")
