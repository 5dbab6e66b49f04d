"""JSON Lines input: one JSON object per line, with the line number of every problem in the error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rerankd.errors import InvalidInput


def json_objects(path: Path, required: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of ``path``; a line that is not a JSON object (or lacks the
    ``required`` key) raises :class:`InvalidInput` naming ``path:line``."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{number} is not valid JSON: {exc.msg}") from exc
            if not isinstance(item, dict):
                raise InvalidInput(f"{path}:{number} must be a JSON object")
            if required is not None and required not in item:
                raise InvalidInput(f'{path}:{number} must be a JSON object with an "{required}"')
            yield number, item
