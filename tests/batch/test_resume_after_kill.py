"""A real `rerankd batch` process killed with SIGKILL mid-run, then restarted with the same arguments: the output is
byte for byte the uninterrupted run's, and the restarted run scores only the pairs the killed one had not."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from tests.batch.conftest import BATCH_TOKENS, write_pairs

pytestmark = pytest.mark.timeout(600)
PAIRS = 1200


def command(model: Path, source: Path, output: Path) -> list[str]:
    flags = ["--device", "cpu", "--dtype", "float32", "--batch-tokens", str(BATCH_TOKENS), "--shard-rows", "300"]
    return ["batch", str(source), "-o", str(output), "-m", str(model), *flags]


def progress_on_disk(state: Path) -> tuple[int, int]:
    """(pairs in finished shards, pairs in journaled steps) in a job's state folder."""
    shards = sum(len(part.read_bytes().splitlines()) for part in state.glob("part-*.jsonl"))
    steps = 0
    for journal in state.glob("part-*.journal"):
        if journal.with_suffix(".jsonl").exists():
            continue  # killed between writing a shard and removing its journal: the shard counts
        for line in journal.read_bytes().splitlines(keepends=True):
            if line.endswith(b"\n"):  # a line still being written is not a finished step
                steps += len(json.loads(line)["scores"])
    return shards, steps


def test_sigkill_mid_run_then_restart_gives_the_uninterrupted_output(tmp_path: Path, bert_ce: Path) -> None:
    source, output = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    write_pairs(source, PAIRS, seed=5)
    exe = str(Path(sys.executable).with_name("rerankd"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    job = subprocess.Popen([exe, *command(bert_ce, source, output)], env=env, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "out.jsonl.rerankd-job"
    deadline = time.monotonic() + 400
    while not (progress_on_disk(state)[0] >= 1 and progress_on_disk(state)[1] >= 1):  # a shard done, one underway
        assert job.poll() is None, f"the job ended before it could be killed: {job.stderr.read() if job.stderr else ''}"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    assert job.returncode == -signal.SIGKILL
    assert not output.exists()
    shards, steps = progress_on_disk(state)

    again = subprocess.run([exe, *command(bert_ce, source, output)], env=env, capture_output=True, text=True,
                           timeout=480, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    resumed = int(re.search(r"resuming: ([\d,]+) of 1,200", again.stderr).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert resumed == shards + steps and shards > 0 and steps > 0  # exactly what was on disk when it was killed
    scored_now = int(re.search(r"this run scored ([\d,]+)", again.stderr).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert scored_now == PAIRS - resumed  # nothing scored twice
    assert not state.exists()

    uninterrupted = tmp_path / "uninterrupted.jsonl"
    result = CliRunner().invoke(app, command(bert_ce, source, uninterrupted))
    assert result.exit_code == 0, result.output
    assert output.read_bytes() == uninterrupted.read_bytes()
    assert len(output.read_bytes().splitlines()) == PAIRS
