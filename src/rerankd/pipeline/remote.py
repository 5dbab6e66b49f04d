"""Elasticsearch and OpenSearch as the first stage, through their official Python clients.

The query is either a plain string (a ``multi_match`` over the mapped title and text fields) or a full query
DSL object in which every string ``"{{query}}"`` is replaced by the query text. Metadata filters become
``bool.filter`` clauses. Hits map to documents by :class:`FieldMapping` (``_id`` or a source field for the id,
dotted source paths for title, text and metadata).

A cluster that cannot be reached, times out or answers 5xx raises :class:`FirstStageUnavailable` (a
``NotReady``: HTTP 503 on the server, so a client retries and nothing is half-done); a 4xx answer (unknown index,
bad query DSL) raises ``InvalidInput`` with the engine's own reason.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rerankd.errors import InvalidInput, MissingDependency, NotReady
from rerankd.pipeline.base import Candidate, check_k, check_query_text
from rerankd.pipeline.documents import Document
from rerankd.pipeline.filters import parse_filters, search_engine_filter

logger = logging.getLogger(__name__)

QUERY_PLACEHOLDER = "{{query}}"


class FirstStageUnavailable(NotReady):
    """The search cluster cannot answer now (down, unreachable, timed out, 5xx); retry later."""

    code = "first_stage_unavailable"


@dataclass(frozen=True)
class FieldMapping:
    """Where a hit's fields are. ``id=None`` uses the hit's ``_id``; ``metadata=None`` takes every other
    top-level source field; ``filter_prefix`` is prepended to filter field names (e.g. ``"metadata."``)."""

    id: str | None = None
    title: str | None = "title"
    text: str = "text"
    metadata: str | None = None
    filter_prefix: str = ""


def _source_path(source: Mapping[str, Any], path: str) -> Any:
    value: Any = source
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return source.get(path)  # a field literally named with dots
        value = value[part]
    return value


def _replace_placeholder(node: Any, query: str) -> Any:
    if isinstance(node, str):
        return node.replace(QUERY_PLACEHOLDER, query)
    if isinstance(node, list):
        return [_replace_placeholder(item, query) for item in node]
    if isinstance(node, dict):
        return {key: _replace_placeholder(value, query) for key, value in node.items()}
    return node


class SearchEngineRetriever:
    """The shared half of the Elasticsearch and OpenSearch retrievers: request body, hits, errors."""

    name = "search-engine"
    engine = "search engine"

    def __init__(
        self,
        client: Any,
        index: str,
        *,
        fields: FieldMapping | None = None,
        query_dsl: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.client = client
        self.index = index
        self.fields = fields or FieldMapping()
        self.query_dsl = copy.deepcopy(dict(query_dsl)) if query_dsl is not None else None
        self.timeout_s = timeout_s

    def close(self) -> None:
        """Close the client's connection pool (a server does it at shutdown)."""
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

    def body(self, query: str, k: int, filters: dict[str, Any] | None) -> dict[str, Any]:
        """The ``_search`` request body."""
        if self.query_dsl is not None:
            text_query = _replace_placeholder(self.query_dsl, query)
        else:
            searched = [self.fields.text] + ([self.fields.title] if self.fields.title else [])
            text_query = {"multi_match": {"query": query, "fields": searched}}
        clauses = search_engine_filter(parse_filters(filters), self.fields.filter_prefix)
        final = {"bool": {"must": [text_query], "filter": clauses}} if clauses else text_query
        return {"query": final, "size": k}

    def retrieve(self, query: str, k: int = 100, filters: dict[str, Any] | None = None) -> list[Candidate]:
        check_query_text(query)
        check_k(k)
        response = self._search(self.body(query, k, filters))
        return self.candidates(response)

    def candidates(self, response: Mapping[str, Any]) -> list[Candidate]:
        """Candidates from a ``_search`` response, in the engine's order."""
        hits = response.get("hits", {}).get("hits", [])
        out: list[Candidate] = []
        skipped: list[str] = []
        for hit in hits:
            document = self.document(hit)
            if document is None:
                skipped.append(str(hit.get("_id")))
                continue
            score = hit.get("_score")
            out.append(Candidate(document, float(score) if score is not None else 0.0, len(out) + 1))
        if skipped:
            logger.warning("%d %s hits have no %r text and are left out: %s", len(skipped), self.engine,
                           self.fields.text, ", ".join(skipped[:10]))  # fmt: skip
        return out

    def document(self, hit: Mapping[str, Any]) -> Document | None:
        source = hit.get("_source") or {}
        mapping = self.fields
        doc_id = _source_path(source, mapping.id) if mapping.id else hit.get("_id")
        text = _source_path(source, mapping.text)
        if doc_id is None or not isinstance(text, str) or not text.strip():
            return None
        title = _source_path(source, mapping.title) if mapping.title else None
        if mapping.metadata is not None:
            metadata = _source_path(source, mapping.metadata)
            metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
        else:
            used = {mapping.id, mapping.title, mapping.text}
            metadata = {key: value for key, value in source.items() if key not in used}
        return Document(str(doc_id), text, title if isinstance(title, str) else "", metadata)

    def _search(self, body: dict[str, Any]) -> Mapping[str, Any]:
        raise NotImplementedError

    def _unavailable(self, exc: Exception) -> FirstStageUnavailable:
        return FirstStageUnavailable(f"{self.engine} is unavailable ({type(exc).__name__}: {exc}); retry later")

    def _rejected(self, status: int, reason: str) -> InvalidInput:
        return InvalidInput(f"{self.engine} rejected the search on {self.index!r} ({status}): {reason}")


def _reason(body: Any, fallback: str) -> str:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
    return fallback


class ElasticsearchRetriever(SearchEngineRetriever):
    """Elasticsearch (the ``elasticsearch`` client; ``pip install 'rerankd[elasticsearch]'``)."""

    name = "elasticsearch"
    engine = "Elasticsearch"

    @classmethod
    def connect(cls, hosts: str | list[str], index: str, *, api_key: str | None = None,
                basic_auth: tuple[str, str] | None = None, ca_certs: str | None = None, verify_certs: bool = True,
                timeout_s: float = 10.0, max_retries: int = 1, **options: Any) -> ElasticsearchRetriever:  # fmt: skip
        """A retriever with its own client. ``options`` go to :class:`SearchEngineRetriever` (fields, query_dsl)."""
        try:
            from elasticsearch import Elasticsearch
        except ImportError as exc:
            raise MissingDependency("the Elasticsearch retriever needs: pip install 'rerankd[elasticsearch]'") from exc
        tls: dict[str, Any] = {"ca_certs": ca_certs} if ca_certs else {}
        client = Elasticsearch(
            hosts, api_key=api_key, basic_auth=basic_auth, verify_certs=verify_certs, request_timeout=timeout_s,
            max_retries=max_retries, retry_on_timeout=max_retries > 0, **tls,
        )  # fmt: skip
        return cls(client, index, timeout_s=timeout_s, **options)

    def _search(self, body: dict[str, Any]) -> Mapping[str, Any]:
        import elasticsearch

        try:
            response = self.client.search(index=self.index, body=body, request_timeout=self.timeout_s)
        except elasticsearch.ApiError as exc:
            status = int(exc.meta.status)
            if status >= 500 or status == 429:
                raise self._unavailable(exc) from exc
            raise self._rejected(status, _reason(exc.body, exc.message)) from exc
        except elasticsearch.TransportError as exc:  # connection refused, timeout, TLS failure
            raise self._unavailable(exc) from exc
        return dict(response)


class OpenSearchRetriever(SearchEngineRetriever):
    """OpenSearch (the ``opensearch-py`` client; ``pip install 'rerankd[opensearch]'``)."""

    name = "opensearch"
    engine = "OpenSearch"

    @classmethod
    def connect(cls, hosts: str | list[str], index: str, *, http_auth: tuple[str, str] | None = None,
                ca_certs: str | None = None, verify_certs: bool = True, timeout_s: float = 10.0,
                max_retries: int = 1, **options: Any) -> OpenSearchRetriever:  # fmt: skip
        try:
            from opensearchpy import OpenSearch
        except ImportError as exc:
            raise MissingDependency("the OpenSearch retriever needs: pip install 'rerankd[opensearch]'") from exc
        listed = [hosts] if isinstance(hosts, str) else hosts
        client = OpenSearch(
            hosts=listed, http_auth=http_auth, use_ssl=any(h.startswith("https") for h in listed),
            verify_certs=verify_certs, ca_certs=ca_certs, timeout=timeout_s, max_retries=max_retries,
            retry_on_timeout=max_retries > 0,
        )  # fmt: skip
        return cls(client, index, timeout_s=timeout_s, **options)

    def _search(self, body: dict[str, Any]) -> Mapping[str, Any]:
        from opensearchpy import exceptions

        try:
            response = self.client.search(index=self.index, body=body, request_timeout=self.timeout_s)
        except exceptions.ConnectionError as exc:  # includes timeouts and TLS failures
            raise self._unavailable(exc) from exc
        except exceptions.TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 503
            if status >= 500 or status == 429:
                raise self._unavailable(exc) from exc
            raise self._rejected(status, _reason(exc.info, str(exc.error))) from exc
        return dict(response)
