"""The first stage that settings name (``--first-stage``, ``RERANKD_FIRST_STAGE*``): the embedded index (``index``,
the default) or an Elasticsearch / OpenSearch cluster through :mod:`.remote`. ``rerankd search`` and ``rerankd serve``
(``POST /v1/search``) both build theirs here, so their flags, env vars and checks are the same.

- ``first_stage_url``: the cluster's node URLs; ``first_stage_index``: the index, alias or pattern searched.
- ``first_stage_query``: the query clause as JSON (or ``@file``) in which every ``"{{query}}"`` is the query text;
  ``{"query": {...}}`` is accepted too. Default: ``multi_match`` over the text and title fields.
- ``first_stage_fields``: ``id=PATH,title=PATH,text=PATH,metadata=PATH,filter_prefix=PREFIX`` (each optional;
  ``id=_id`` or none: the hit's ``_id``; ``title=`` empty: no title; no ``metadata``: every other source field).
- ``first_stage_api_key`` (Elasticsearch), ``first_stage_auth`` (``user:password``, both engines),
  ``first_stage_ca_certs``, ``first_stage_verify_certs``, ``first_stage_timeout_s``.

A setting that cannot work (no URL, a DSL that never uses the query, an unknown field key) is an ``InvalidInput``
raised before anything connects or loads.
"""

from __future__ import annotations

import json
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rerankd.errors import InvalidInput
from rerankd.pipeline.remote import (
    QUERY_PLACEHOLDER,
    ElasticsearchRetriever,
    FieldMapping,
    OpenSearchRetriever,
    SearchEngineRetriever,
)

if TYPE_CHECKING:
    from rerankd.settings import Settings

CLUSTERS = ("elasticsearch", "opensearch")
FIELD_KEYS = tuple(field.name for field in dataclass_fields(FieldMapping))


def field_mapping(spec: str) -> FieldMapping:
    """``"title=headline,text=body,filter_prefix=meta."`` -> :class:`FieldMapping` (unnamed keys keep defaults)."""
    given: dict[str, Any] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in FIELD_KEYS:
            raise InvalidInput(
                f"--first-stage-fields: {part!r} is not key=value with a key among {', '.join(FIELD_KEYS)}",
                param="first_stage_fields",
            )
        given[key] = value
    if given.get("id") in ("", "_id"):
        given["id"] = None
    if given.get("title") == "":
        given["title"] = None
    if given.get("metadata") == "":
        given["metadata"] = None
    if given.get("text") == "":
        raise InvalidInput("--first-stage-fields: text= needs a source field", param="first_stage_fields")
    return FieldMapping(**given)


def query_dsl(spec: str | None) -> dict[str, Any] | None:
    """The query clause from JSON text or ``@file``; it must use ``"{{query}}"`` (else every search is the same)."""
    if spec is None or not spec.strip():
        return None
    text = spec.strip()
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        if not path.is_file():
            raise InvalidInput(f"--first-stage-query: no such file {path}", param="first_stage_query")
        text = path.read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--first-stage-query is not valid JSON: {exc.msg}", param="first_stage_query") from None
    if isinstance(value, dict) and set(value) == {"query"}:
        value = value["query"]  # a whole search body's query: the retriever adds size and filters itself
    if not isinstance(value, dict) or not value:
        raise InvalidInput("--first-stage-query must be a JSON object (a query clause)", param="first_stage_query")
    if QUERY_PLACEHOLDER not in json.dumps(value):
        raise InvalidInput(
            f"--first-stage-query never uses {QUERY_PLACEHOLDER}: every search would be the same",
            param="first_stage_query",
        )
    return value


def basic_auth(spec: str | None) -> tuple[str, str] | None:
    if not spec:
        return None
    user, sep, password = spec.partition(":")
    if not sep or not user:
        raise InvalidInput("--first-stage-auth must be user:password", param="first_stage_auth")
    return user, password


def cluster_retriever(settings: Settings) -> SearchEngineRetriever | None:
    """The Elasticsearch / OpenSearch retriever ``settings`` configure, or None for the embedded index. Nothing
    connects yet: a cluster that is down fails each search with ``FirstStageUnavailable`` (503)."""
    engine = settings.first_stage
    if engine not in CLUSTERS:
        return None
    if not settings.first_stage_url or not settings.first_stage_index:
        raise InvalidInput(
            f"--first-stage {engine} needs --first-stage-url (the cluster) and --first-stage-index (what to search)",
            param="first_stage_url" if not settings.first_stage_url else "first_stage_index",
        )
    options: dict[str, Any] = {
        "fields": field_mapping(settings.first_stage_fields),
        "query_dsl": query_dsl(settings.first_stage_query),
        "ca_certs": settings.first_stage_ca_certs,
        "verify_certs": settings.first_stage_verify_certs,
        "timeout_s": settings.first_stage_timeout_s,
        "max_retries": 0,  # one attempt: --first-stage-timeout bounds a search (a retry would double the wait)
    }
    hosts, index, auth = (
        list(settings.first_stage_url),
        settings.first_stage_index,
        basic_auth(settings.first_stage_auth),
    )
    if engine == "elasticsearch":
        return ElasticsearchRetriever.connect(hosts, index, api_key=settings.first_stage_api_key, basic_auth=auth,
                                              **options)  # fmt: skip
    if settings.first_stage_api_key:
        raise InvalidInput(
            "--first-stage-api-key is Elasticsearch's; OpenSearch takes --first-stage-auth user:password",
            param="first_stage_api_key",
        )
    return OpenSearchRetriever.connect(hosts, index, http_auth=auth, **options)
