"""Optional dependencies, named by the extra that installs them, checked before a command does any work.

A command calls :func:`require` for what its flags need (``serve`` the server extra, ``export --onnx`` the onnx
extra, ...) so a missing package is one line naming ``pip install 'rerankd[extra]'`` and exit status 3, before a
model loads. :func:`missing_extra` turns a ``ModuleNotFoundError`` that escaped anyway into the same line (the
``@command`` decorator calls it), so no command ends in a traceback for a package the user chose not to install.
"""

from __future__ import annotations

import importlib.util

from rerankd.errors import MissingDependency

# extra -> the top-level modules it provides (those rerankd imports), as in pyproject.toml's optional-dependencies.
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("fastapi", "uvicorn", "prometheus_client"),
    "onnx": ("onnxruntime", "onnx"),
    "eval": ("bm25s", "pytrec_eval", "scipy", "matplotlib"),
    "search": ("tantivy", "usearch", "pyarrow"),
    "batch": ("pyarrow",),
    "ray": ("ray",),
    "modelscope": ("modelscope",),
    "elasticsearch": ("elasticsearch",),
    "opensearch": ("opensearchpy",),
}
# Modules of the server extra needed only by some options: redis for `--cache redis://...`.
OPTIONAL_MODULES: dict[str, str] = {"redis": "server"}


def install_hint(extra: str) -> str:
    return f"pip install 'rerankd[{extra}]'"


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def require(extra: str, purpose: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingDependency` if any of ``modules`` (default: all the extra's) is not installed."""
    missing = [name for name in (modules or EXTRAS[extra]) if _absent(name)]
    if missing:
        absent = ", ".join(missing)
        raise MissingDependency(f"{purpose} needs the {extra} extra ({absent} not installed): {install_hint(extra)}")


def missing_extra(error: ModuleNotFoundError) -> MissingDependency | None:
    """The :class:`MissingDependency` for an import that failed because an extra is not installed, else None."""
    root = (error.name or "").split(".")[0]
    extra = OPTIONAL_MODULES.get(root) or next((name for name, mods in EXTRAS.items() if root in mods), None)
    if extra is None:
        return None
    return MissingDependency(f"{root} is not installed (part of the {extra} extra): {install_hint(extra)}")
