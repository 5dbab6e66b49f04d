"""One frozen settings object shared by the CLI and the server: flags override ``RERANKD_*`` env vars,
which override the defaults. Read at start-up (``Settings()``), never at import."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from rerankd.builder import LoadOptions


def quantize_choice(text: str) -> str | None:
    """A quantisation setting as written by a user: ``""``, ``none`` or ``off`` mean none."""
    return None if text.strip().lower() in ("", "none", "off") else text.strip()


# The names runtime.devices accepts, checked here without importing torch (tests keep the two lists equal), so a
# typo fails before any model loads.
DTYPE_NAMES = ("auto", "float32", "fp32", "float16", "fp16", "half", "bfloat16", "bf16")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|npu|mps)(:\d+)?$")


def dtype_choice(text: str) -> str:
    if text.strip().lower() not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {text!r}; use auto, float32, float16 or bfloat16")
    return text.strip()


def device_choice(text: str) -> str:
    if DEVICE_PATTERN.match(text.strip().lower()) is None:
        raise ValueError(f"unknown device {text!r}; use auto, cpu, cuda[:N], npu[:N] or mps")
    return text.strip()


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _numbers(text: str, kind: Callable[[str], Any], example: str, what: str, empty: str) -> tuple[Any, ...]:
    """Numbers as a user writes them: ``a,b`` or ``a+b`` (``+`` where commas separate entries, as in RERANKD_MODELS)."""
    try:
        numbers = tuple(kind(part) for part in text.replace("+", ",").split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a list of {what} (e.g. {example})") from None
    if not numbers:
        raise ValueError(empty)
    return numbers


def layers_choice(text: str) -> tuple[int, ...]:
    """Layer numbers: ``8,12`` or ``8+12``."""
    return _numbers(text, int, "8+12", "layer numbers", "give at least one layer number")


def weights_choice(text: str) -> tuple[float, ...]:
    """Weights: ``0.4,0.2,0.4`` or ``0.4+0.2+0.4``."""
    return _numbers(text, float, "0.4+0.2+0.4", "numbers", "give the weights, e.g. 0.4+0.2+0.4")


# A served model's own family options: `--model 'name=path;KEY=VALUE;...'` (keys as in `rerankd eval -m`).
MODEL_OPTION_KEYS: dict[str, Callable[[str], Any]] = {
    "cutoff_layers": layers_choice,
    "compress_ratio": int,
    "compress_layers": layers_choice,
    "score_weights": weights_choice,
}


def model_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``name=path;KEY=VALUE;...`` (or ``path;...``) -> (served name, path, the model's own options); a bare path is
    served under its own name."""
    head, *assignments = [part.strip() for part in spec.split(";")]
    name, sep, path = head.partition("=")
    name, path = (name.strip(), path.strip()) if sep else (head, head)
    if not name or not path:
        raise ValueError(f"bad --model {spec!r}: use name=path or path, then ;KEY=VALUE options")
    options: dict[str, Any] = {}
    for assignment in filter(None, assignments):
        key, sep, text = assignment.partition("=")
        key = key.strip().replace("-", "_")
        convert = MODEL_OPTION_KEYS.get(key)
        if not sep or convert is None:
            known = ", ".join(MODEL_OPTION_KEYS)
            raise ValueError(f"bad --model {spec!r}: {assignment!r} is not KEY=VALUE with a KEY of {known}")
        try:
            options[key] = convert(text.strip())
        except ValueError as exc:
            raise ValueError(f"bad --model {spec!r}: {key}={text.strip()!r}: {exc}") from None
    return name, path, options


# Settings whose command-line flag is not --<field-name>.
FLAG_NAMES = {"request_timeout_s": "--timeout", "drain_timeout_s": "--drain-timeout", "models": "--model",
              "routes": "--route", "first_stage_timeout_s": "--first-stage-timeout"}  # fmt: skip


def explain(error: ValidationError) -> str:
    """A settings error in the user's words: the flag, its env var, the value given and the valid choices."""
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "settings"
        flag = FLAG_NAMES.get(field, "--" + field.replace("_", "-"))
        given = item.get("input")
        if item["type"] == "literal_error":
            choices = str((item.get("ctx") or {}).get("expected", "")).replace("'", "")
            what = f"choose {choices}{' or none' if field == 'quantize' else ''}"
        elif item["type"] == "value_error":
            what = str((item.get("ctx") or {}).get("error", item["msg"]))
        else:
            what = item["msg"][0].lower() + item["msg"][1:]
        problems.append(f"invalid {flag} {given!r} (env RERANKD_{field.upper()}): {what}")
    return "; ".join(problems)


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


# Several values in one env var: comma-separated, except routes, whose entries contain commas (";").
Listed = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RERANKD_", frozen=True, extra="forbid")

    # --- model loading (every command)
    model: str = Field(default="all-MiniLM-L6-v2", description="folder, hub id, modelscope:<id> or packaged model")
    family: str | None = Field(default=None, description="override family detection")
    device: str = "auto"
    dtype: str = "auto"
    max_length: int | None = Field(default=None, ge=8)
    normalize: bool = True
    trust_remote_code: bool = False
    batch_tokens: int | None = Field(default=None, ge=16, description="padded tokens per forward pass")
    max_batch_size: int | None = Field(default=None, ge=1)
    truncation: Literal["flag", "longest_first"] = "flag"
    backend: Literal["torch", "onnx"] = Field(default="torch", description="encoder families: torch or ONNX Runtime")
    quantize: Literal["int8"] | None = Field(default=None, description="encoder families on CPU: dynamic int8")
    dtype_guard: bool = Field(default=True, description='dtype="auto": check the reduced dtype on a probe set')
    deterministic: bool = Field(
        default=False, description="one input per forward pass: scores bit-identical whatever the batch"
    )

    # --- server (`rerankd serve`)
    host: str = Field(default="127.0.0.1", description="interface to bind; 0.0.0.0 exposes the server to the network")
    port: int = Field(default=8000, ge=0, le=65535)
    models: Listed = Field(
        default=(),
        description="served models, `name=path` or `path` (default: `model`), then `;KEY=VALUE` family options "
        "(cutoff_layers, compress_ratio, compress_layers, score_weights; lists as 8+12)",
    )
    routes: Listed = Field(default=(), description="weighted aliases, `alias=a:90,b:10` (env: `;`-separated)")
    api_key: Listed = Field(default=(), repr=False, description="accepted Bearer keys (none: no authentication)")
    require_api_key: bool = Field(
        default=False, description="refuse to start without --api-key (the container image sets it)"
    )
    admin_key: Listed = Field(default=(), repr=False, description="Bearer keys of the admin API (none: no admin API)")
    state_file: str | None = Field(default=None, description="where live traffic changes persist across restarts")
    feedback_ttl_s: float = Field(default=3600.0, gt=0, description="how long a served ranking accepts feedback")
    feedback_k: int = Field(default=10, ge=1, description="the cutoff k of online MRR@k, NDCG@k and CTR@k")
    feedback_store: str = Field(
        default="memory", description="served rankings awaiting feedback: memory, or a redis:// URL replicas share"
    )
    feedback_min_dwell_ms: float = Field(
        default=30_000.0, ge=0, description="a click with a reported dwell under this is a short click (0: all count)"
    )
    allow_unauthenticated: bool = Field(
        default=False, description="serve without an API key even where require_api_key is set or the bind is public"
    )
    cache: str = Field(default="memory", description="score cache: memory, none or a redis:// URL")
    cache_size: int = Field(default=100_000, ge=1, description="entries of the in-memory score cache")
    cache_ttl_s: int = Field(default=7 * 24 * 3600, ge=1, description="lifetime of a Redis cache entry")
    cache_max_bytes: int = Field(default=64 << 20, ge=1 << 16, description="memory bound of the in-memory score cache")
    cache_timeout_ms: float = Field(default=50.0, gt=0, description="longest a request waits for a Redis cache read")
    max_queue: int = Field(default=4096, ge=1, description="model inputs (after chunking) queued per model before 429")
    max_queue_tokens: int = Field(default=1 << 20, ge=1024, description="tokens queued per model before 429")
    max_chunks_per_doc: int = Field(default=64, ge=1, description="the most chunks per document a request may ask for")
    request_timeout_s: float = Field(default=60.0, gt=0, description="time limit of one request in the queue and model")
    max_documents: int = Field(default=1000, ge=1, description="documents (pairs) per request before 413")
    max_embedding_inputs: int = Field(default=2048, ge=1, description="texts per /v1/embeddings request before 413")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="request body limit before 413")
    body_timeout_s: float = Field(default=30.0, gt=0, description="time to receive a request body before 408")
    metrics_auth: bool = Field(default=False, description="require the API key for /metrics too")
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After of a 429")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="SIGTERM: how long in-flight requests may finish")
    log_level: str = "info"
    log_format: Literal["json", "text"] = "json"
    index: str | None = Field(default=None, description="search index folder served at POST /v1/search")

    # --- search's first stage (`rerankd search`, POST /v1/search): the embedded index or a cluster (docs/search.md)
    first_stage: Literal["index", "elasticsearch", "opensearch"] = Field(
        default="index", description="the embedded index (--index), or an Elasticsearch / OpenSearch cluster"
    )
    first_stage_url: Listed = Field(default=(), description="the cluster's node URLs (env: comma-separated)")
    first_stage_index: str | None = Field(default=None, description="the cluster's index, alias or pattern searched")
    first_stage_query: str | None = Field(
        default=None, description='query DSL (JSON or @file) in which "{{query}}" is the query (default: multi_match)'
    )
    first_stage_fields: str = Field(default="", description="hit fields: id=,title=,text=,metadata=,filter_prefix=")
    first_stage_api_key: str | None = Field(default=None, repr=False, description="Elasticsearch API key")
    first_stage_auth: str | None = Field(default=None, repr=False, description="basic auth user:password")
    first_stage_ca_certs: str | None = Field(default=None, description="CA file that signs the cluster's certificate")
    first_stage_verify_certs: bool = Field(default=True, description="verify the cluster's TLS certificate")
    first_stage_timeout_s: float = Field(default=10.0, gt=0, description="time limit of one cluster search")

    @field_validator("quantize", mode="before")
    @classmethod
    def _no_quantization(cls, value: Any) -> Any:
        return quantize_choice(value) if isinstance(value, str) else value

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        return dtype_choice(value)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return device_choice(value)

    @field_validator("feedback_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value.strip().lower() != "memory" and not value.strip().startswith(REDIS_SCHEMES):
            raise ValueError("use memory or a Redis URL (redis://host:port/db, rediss://…, unix://…)")
        return value.strip()

    @field_validator("models", "api_key", "admin_key", "first_stage_url", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("models")
    @classmethod
    def _model_specs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for spec in value:
            model_spec(spec)  # a bad name=path;KEY=VALUE fails here, before any model loads
        return value

    @field_validator("routes", mode="before")
    @classmethod
    def _split_semicolons(cls, value: Any) -> Any:
        return tuple(part.strip() for part in value.split(";") if part.strip()) if isinstance(value, str) else value

    def exposure_problem(self) -> tuple[str, bool] | None:
        """What is wrong with serving unauthenticated on this bind address: (message, fatal), or None."""
        if self.api_key or self.allow_unauthenticated:
            return None
        if self.require_api_key:
            return (
                "no API key: set --api-key / RERANKD_API_KEY, or --allow-unauthenticated / "
                "RERANKD_ALLOW_UNAUTHENTICATED=1 to serve without one",
                True,
            )
        if not is_loopback(self.host):
            return (
                f"serving on {self.host} without an API key: anyone who can reach this port can use it "
                "(set --api-key, or --allow-unauthenticated to silence this warning)",
                False,
            )
        return None

    def served_models(self) -> list[tuple[str, str]]:
        """(served name, model path or id) pairs; a bare path is served under its own name."""
        out = [model_spec(spec)[:2] for spec in self.models or (self.model,)]
        names = [name for name, _ in out]
        if len(set(names)) != len(names):
            raise ValueError(f"served model names must be unique, got {names}")
        return out

    def model_options(self, name: str) -> dict[str, Any]:
        """The family options ``--model 'name=path;KEY=VALUE;...'`` gives served model ``name`` (none: ``{}``)."""
        specs = [model_spec(spec) for spec in self.models or (self.model,)]
        return next((options for served, _, options in specs if served == name), {})

    def parsed_routes(self, served: Collection[str] | None = None) -> dict[str, list[tuple[str, float]]]:
        """Aliases served by weighted models: ``main=a:90,b:10`` -> ``{"main": [("a", 90), ("b", 10)]}``."""
        served = set(served) if served is not None else {name for name, _ in self.served_models()}
        out: dict[str, list[tuple[str, float]]] = {}
        for spec in self.routes:
            alias, sep, targets = spec.partition("=")
            alias = alias.strip()
            if not sep or not alias or alias in served:
                raise ValueError(f"bad --route {spec!r}: use alias=model:weight,... with a new alias name")
            choices = []
            for target in targets.split(","):
                name, _, weight = target.strip().partition(":")
                if name not in served:
                    raise ValueError(f"--route {alias}: {name!r} is not a served model ({', '.join(sorted(served))})")
                try:
                    value = float(weight) if weight else 1.0
                except ValueError:
                    raise ValueError(f"--route {alias}: weight {weight!r} is not a number") from None
                if value < 0:
                    raise ValueError(f"--route {alias}: weights must be >= 0")
                choices.append((name, value))
            if sum(w for _, w in choices) <= 0:
                raise ValueError(f"--route {alias}: at least one weight must be positive")
            out[alias] = choices
        return out

    def with_overrides(self, **flags: Any) -> Settings:
        """A validated copy with every flag that was given (not None) applied."""
        given = {key: value for key, value in flags.items() if value is not None}
        return type(self)(**{**self.model_dump(), **given}) if given else self

    def load_options(self, served: str | None = None) -> LoadOptions:
        """How every served or loaded model is loaded (:class:`rerankd.builder.LoadOptions`); with ``served``, plus
        that served model's own options (:meth:`model_options`)."""
        from rerankd.builder import LoadOptions  # imported here: reading settings must not import torch

        own = self.model_options(served) if served is not None else {}
        return LoadOptions.from_kwargs(**{**self.model_dump(include=set(LOAD_FIELDS)), **own})


# Settings that are load options, under the same names as Reranker.from_pretrained's keywords.
LOAD_FIELDS = (
    "device", "dtype", "family", "max_length", "normalize", "trust_remote_code", "batch_tokens", "max_batch_size",
    "truncation", "backend", "quantize", "dtype_guard", "deterministic",
)  # fmt: skip
