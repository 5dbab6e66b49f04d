"""The ``dtype="auto"`` guard's verdicts, remembered so that loading the same weights again costs no probe.

A verdict (the dtype kept and the probe agreement) is stored as a small JSON file under
``$RERANKD_GUARD_CACHE``, else ``$XDG_CACHE_HOME/rerankd/dtype-guard``, else ``~/.cache/rerankd/dtype-guard``
(``RERANKD_GUARD_CACHE=off`` turns the cache off). The file is named by a digest of everything the verdict
depends on:

- the model: every weight, config and tokenizer file under the folder, by relative name, size and mtime (cheap:
  no weight is read; a rewritten file changes its mtime);
- the family and its load options (max length, pooling, truncation, ...), since they change the probe scores;
- the machine: CPU flags (which kernels run, native or emulated bf16) or the accelerator's name;
- the software: rerankd's version and the size/mtime of its family and runtime sources, torch's and
  transformers' versions;
- the probe set, the acceptance rule and the reduced dtype.

A file that cannot be read, does not parse or holds another key is ignored (the probe runs and rewrites it); a
cache folder that cannot be written only costs the probe on the next load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import uuid
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from rerankd.hardware import cpu_flags
from rerankd.runtime.acceptance import PrecisionRule
from rerankd.runtime.dtype_guard import Agreement

logger = logging.getLogger(__name__)

FORMAT = 1
OFF = ("0", "off", "none", "false", "no")
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model")


def cache_root() -> Path | None:
    """The folder verdicts are kept in, or None when the cache is off."""
    explicit = os.environ.get("RERANKD_GUARD_CACHE", "").strip()
    if explicit.lower() in OFF and explicit:
        return None
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "rerankd" / "dtype-guard"


def _files_fingerprint(folder: Path) -> list[str]:
    """Relative name, size and mtime of the files that define the model (weights, configs, tokenizer)."""
    rows = []
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.name.endswith(MODEL_SUFFIXES) and ".cache" not in file.parts:
            stat = file.stat()
            rows.append(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    return rows


def _code_fingerprint() -> str:
    """rerankd's version and its family and runtime sources (their numerics decide the probe's scores)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(_version("rerankd").encode())
    for source in sorted([*(package / "families").glob("*.py"), *(package / "runtime").glob("*.py")]):
        stat = source.stat()
        digest.update(f"{source.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16]
    return f"{device.type}:{platform.machine()}:flags-{flags}"


@dataclass(frozen=True)
class VerdictKey:
    """What a verdict depends on, readable (it is written next to the verdict) and hashed into the file name."""

    folder: str
    files: tuple[str, ...]
    context: str  # the family and its load options
    machine: str
    software: str
    probe: str
    dtype: str

    @classmethod
    def build(cls, folder: Path, device: torch.device, dtype: torch.dtype, context: str, probe: object) -> VerdictKey:
        software = (
            f"rerankd {_version('rerankd')} code {_code_fingerprint()} torch {torch.__version__} "
            f"transformers {_version('transformers')}"
        )
        probe_digest = hashlib.sha256(f"{probe!r}|{PrecisionRule()!r}|format{FORMAT}".encode()).hexdigest()[:16]
        return cls(
            folder=str(folder.resolve()),
            files=tuple(_files_fingerprint(folder)),
            context=context,
            machine=_machine(device),
            software=software,
            probe=probe_digest,
            dtype=str(dtype).removeprefix("torch."),
        )

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]

    def path(self) -> Path | None:
        root = cache_root()
        return None if root is None else root / f"{Path(self.folder).name}-{self.digest()}.json"


def read_verdict(key: VerdictKey) -> dict[str, Any] | None:
    """The stored verdict for ``key`` (``{"dtype": ..., "agreement": {...}}``), or None."""
    path = key.path()
    if path is None or not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") != json.loads(json.dumps(asdict(key))) or stored.get("format") != FORMAT:
            return None
        verdict = stored["verdict"]
        if not isinstance(verdict.get("dtype"), str) or not isinstance(verdict.get("agreement"), dict):
            return None
        return dict(verdict)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        logger.debug("dtype guard cache %s unreadable (%s): probing again", path, exc)
        return None


def write_verdict(key: VerdictKey, verdict: dict[str, Any]) -> None:
    """Store ``verdict`` for ``key`` (atomically: concurrent loaders never see half a file); errors are logged."""
    path = key.path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        payload = {"format": FORMAT, "key": asdict(key), "verdict": verdict}
        temporary.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, path)
    except (OSError, TypeError, ValueError) as exc:
        logger.debug("dtype guard cache %s not written: %s", path, exc)


def recall(key: VerdictKey) -> tuple[torch.dtype, Agreement] | None:
    """The dtype and probe agreement an earlier load reached for ``key``, or None (probe needed)."""
    verdict = read_verdict(key)
    if verdict is None:
        return None
    try:
        dtype = getattr(torch, verdict["dtype"])
        stored = dict(verdict["agreement"])
        agreement = Agreement(**{**stored, "failures": tuple(stored.get("failures", ()))})
    except (AttributeError, TypeError, ValueError) as exc:
        logger.debug("dtype guard cache entry for %s unusable (%s): probing again", key.folder, exc)
        return None
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return None
    return dtype, agreement


def remember(key: VerdictKey, dtype: torch.dtype, agreement: Agreement) -> None:
    """Store the guard's verdict for the next load of the same weights on the same machine and software."""
    write_verdict(key, {"dtype": str(dtype).removeprefix("torch."), "agreement": asdict(agreement)})
