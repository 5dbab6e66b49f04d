"""What ``rerankd models`` lists, remembered so that listing again does not import torch.

Every family module imports torch (~1.5 s of start-up) to define its spec. The rows (name, detection, summary,
capabilities, published ids) only change when rerankd's family sources do, so the first listing writes them to
``$XDG_CACHE_HOME/rerankd/families-<key>.json`` (else ``~/.cache/rerankd/``), keyed on rerankd's version and
the path, size and modification time of ``registry.py`` and every module under ``families/``; later listings read
that file. A cache that cannot be read or written is ignored: the listing is then computed, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FamilyRow:
    name: str
    detection: str
    summary: str
    can: tuple[str, ...]
    known_ids: tuple[str, ...]


def cache_file() -> Path:
    """Where the rows for the installed family sources are kept."""
    import rerankd

    package = Path(rerankd.__file__).resolve().parent
    sources = [package / "registry.py", *sorted((package / "families").glob("*.py"))]
    digest = hashlib.sha256(rerankd.__version__.encode())
    for source in sources:
        stat = source.stat()
        digest.update(f"{source}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "rerankd" / f"families-{digest.hexdigest()[:16]}.json"


def family_rows() -> list[FamilyRow]:
    """One row per registered family, in detection order."""
    try:
        path: Path | None = cache_file()
    except OSError:
        path = None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            return [FamilyRow(**{**r, "can": tuple(r["can"]), "known_ids": tuple(r["known_ids"])}) for r in cached]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            logger.debug("family listing cache unreadable: %s", exc)
    rows = _rows_from_registry()
    if path is not None:
        _write(path, rows)
    return rows


def _write(path: Path, rows: list[FamilyRow]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as out:
            json.dump([asdict(row) for row in rows], out)
        os.replace(out.name, path)
    except OSError as exc:
        logger.debug("family listing not cached: %s", exc)


def _rows_from_registry() -> list[FamilyRow]:
    from rerankd.registry import families

    return [
        FamilyRow(s.name, s.detection, s.summary, tuple(s.capabilities.names()), tuple(s.known_ids)) for s in families()
    ]
