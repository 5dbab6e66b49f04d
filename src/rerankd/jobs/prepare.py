"""Preparing a scoring call: checked inputs -> encoded model inputs (truncation policy, long-document chunking) ->
a :class:`~rerankd.jobs.job.ScoringJob`. Work proceeds in slices of documents, so a caller can abandon it between
steps (deadline passed, client gone) and a request that would need too many model inputs stops early. A step is at
most 256 documents and 64 KiB of their text, so abandoned work stops soon whatever the documents' lengths: work left
running after its request was answered competes with the answers still due (for the CPU and the GIL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from rerankd.chunking import Split, fit_documents
from rerankd.errors import InputTooLong, PayloadTooLarge
from rerankd.families.base import CallOptions, Embedder, Encoded, Family, PairScorer, Role
from rerankd.jobs.job import (
    ScoreOptions,
    ScoringJob,
    call_options,
    cosine_finisher,
    describe_cut,
    identity,
    score_finisher,
    too_long,
)
from rerankd.validation import CheckedPairs, CheckedTexts

SLICE = 256  # most documents encoded per step: the granularity at which a preparation can be abandoned
SLICE_CHARS = 64 * 1024  # most characters of document text per step (a longer document is a step of its own)


def _never_stop() -> None:
    return None


def slices(texts: Sequence[str]) -> Iterator[range]:
    """Consecutive index ranges of ``texts``, each at most :data:`SLICE` texts and :data:`SLICE_CHARS` characters
    (and at least one text): the steps of a preparation."""
    start = 0
    while start < len(texts):
        end, size = start + 1, len(texts[start])
        while end < len(texts) and end - start < SLICE and size + len(texts[end]) <= SLICE_CHARS:
            size += len(texts[end])
            end += 1
        yield range(start, end)
        start = end


@dataclass(frozen=True)
class Defaults:
    """A loaded model's own choices, which a call's :class:`ScoreOptions` may override."""

    normalize: bool = True
    truncate: bool = True


@dataclass(frozen=True)
class Budget:
    """Bounds on one preparation. ``checkpoint`` is called between steps and raises to abandon the work (deadline
    passed, client gone); ``max_items`` stops a request that needs more model inputs (after chunking) than the
    caller will ever run, before it is all tokenised."""

    checkpoint: Callable[[], None] = _never_stop
    max_items: int | None = None

    def check(self, items: int) -> None:
        self.checkpoint()
        if self.max_items is not None and items > self.max_items:
            raise PayloadTooLarge(
                f"the request needs more than {self.max_items} model inputs after chunking (the server's limit); "
                "send fewer documents or lower max_chunks_per_doc",
                param="documents",
            )


UNBOUNDED = Budget()


def input_limit(family: Family, options: ScoreOptions) -> int:
    """Tokens one model input may have under ``options``: a requested cap (vLLM's ``truncate_prompt_tokens``)
    never goes past the model's own limit."""
    return min(options.max_input_tokens or family.limits.max_length, family.limits.max_length)


def prepare_pairs(
    family: Family, pairs: CheckedPairs, options: ScoreOptions, defaults: Defaults, budget: Budget = UNBOUNDED
) -> ScoringJob:
    """Encode checked (query, document) pairs; the job's rows are one score row per pair."""
    options.check()
    groups: dict[str, list[int]] = {}
    for position, (query, _) in enumerate(pairs):
        groups.setdefault(query, []).append(position)
    if isinstance(family, Embedder):
        return _prepare_cosine(family, pairs, groups, options, defaults, budget)
    call = call_options(options.instruction, options.cutoff_layers)
    call = replace(
        call,
        compress_ratio=options.compress_ratio,
        compress_layers=options.compress_layers,
        score_weights=options.score_weights,
    )
    return _prepare_scored(family, pairs, groups, options, call, defaults, budget)


def prepare_embed(
    family: Embedder, texts: CheckedTexts, role: Role, truncate: bool, budget: Budget = UNBOUNDED
) -> ScoringJob:
    """Encode checked texts for embedding; the job's rows are the vectors."""
    encoded: list[Encoded] = []
    for step in slices(texts):
        budget.check(step.start)
        encoded += family.encode_texts(texts[step.start : step.stop], role)
    cut = _check_lengths(family, encoded, range(len(encoded)), truncate, param="texts")
    warnings = describe_cut(cut, chunked=False, limit=family.limits.max_length, what="input")
    return ScoringJob(encoded, "embed", CallOptions(), [len(e) for e in encoded], cut, warnings, identity)


@dataclass
class _Collected:
    """Model inputs gathered across query groups and document slices."""

    tokens: list[int]
    items: list[Encoded] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    cut: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, windows: Sequence[tuple[int, str]], encoded: Sequence[Encoded]) -> None:
        for (position, _), item in zip(windows, encoded, strict=True):
            self.items.append(item)
            self.owners.append(position)
            self.tokens[position] += len(item)


def _prepare_scored(
    family: PairScorer,
    pairs: CheckedPairs,
    groups: dict[str, list[int]],
    options: ScoreOptions,
    call: CallOptions,
    defaults: Defaults,
    budget: Budget,
) -> ScoringJob:
    truncate = defaults.truncate if options.truncate is None else options.truncate
    got = _Collected(tokens=[0] * len(pairs))
    for query, positions in groups.items():
        probe = family.encode_pairs(query, [""], call)[0]  # the query with the template, no document
        _check_query(probe, truncate, got.warnings)
        documents = [pairs[p][1] for p in positions]
        for step in slices(documents):
            budget.check(len(got.items))
            members = positions[step.start : step.stop]
            windows = _windows(family, documents[step.start : step.stop], members, options, len(probe), truncate, got)
            encoded = family.encode_pairs(query, [text for _, text in windows], call)
            got.cut += _check_lengths(family, encoded, [p for p, _ in windows], truncate or options.chunked)
            got.add(windows, encoded)
    budget.check(len(got.items))
    normalize = defaults.normalize if options.normalize is None else options.normalize
    finish = score_finisher(got.owners, len(pairs), normalize and family.activation == "sigmoid")
    cut = sorted(set(got.cut))
    warnings = got.warnings + describe_cut(cut, chunked=options.chunked, limit=input_limit(family, options))
    return ScoringJob(got.items, "score", call, got.tokens, cut, warnings, finish, tuple(got.warnings))


def _check_query(probe: Encoded, truncate: bool, warnings: list[str]) -> None:
    """A query longer than the model lets it be is an error with truncation off, and a warning otherwise."""
    if not probe.truncated:
        return
    if not truncate:
        raise InputTooLong(
            f"the query has {probe.full_length} tokens with the model's template, over the {len(probe)} the model "
            "allows a query; shorten it or enable truncation",
            index=0,
            tokens=probe.full_length,
            limit=len(probe),
            param="query",
        )
    warning = f"the query was truncated to the model's query limit ({len(probe)} tokens with its template)"
    if warning not in warnings:
        warnings.append(warning)


def _windows(
    family: Family,
    docs: list[str],
    positions: Sequence[int],
    options: ScoreOptions,
    overhead: int,
    truncate: bool,
    got: _Collected,
) -> list[tuple[int, str]]:
    """(position, text) per model input: the documents themselves, or their cut or split windows."""
    if not options.reshapes_text:
        return list(zip(positions, docs, strict=True))
    splits = _fit(family, docs, positions, options, overhead, truncate)
    got.cut += [p for p, s in zip(positions, splits, strict=True) if s.dropped]
    return [(p, text) for p, s in zip(positions, splits, strict=True) for text in s.windows]


def _prepare_cosine(
    family: Embedder,
    pairs: CheckedPairs,
    groups: dict[str, list[int]],
    options: ScoreOptions,
    defaults: Defaults,
    budget: Budget,
) -> ScoringJob:
    truncate = defaults.truncate if options.truncate is None else options.truncate
    queries = list(groups)
    query_items = family.encode_texts(queries, "query")
    query_of = {q: i for i, q in enumerate(queries)}
    got = _Collected(tokens=[len(query_items[query_of[query]]) for query, _ in pairs])
    got.cut += _check_lengths(family, query_items, [groups[q][0] for q in queries], truncate)
    overhead = len(family.encode_texts([""], "document")[0])  # special tokens only
    for step in slices([document for _, document in pairs]):
        budget.check(len(got.items))
        positions = list(step)
        windows = _windows(family, [pairs[p][1] for p in positions], positions, options, overhead, truncate, got)
        doc_items = family.encode_texts([text for _, text in windows], "document")
        got.cut += _check_lengths(family, doc_items, [p for p, _ in windows], truncate or options.chunked)
        got.add(windows, doc_items)
    budget.check(len(got.items) + len(query_items))
    rows = [query_of[pairs[p][0]] for p in got.owners]
    finish = cosine_finisher(len(queries), rows, got.owners, len(pairs))
    cut = sorted(set(got.cut))
    warnings = describe_cut(cut, chunked=options.chunked, limit=input_limit(family, options))
    return ScoringJob(query_items + got.items, "embed", CallOptions(), got.tokens, cut, warnings, finish)


def _fit(
    family: Family, docs: list[str], positions: Sequence[int], options: ScoreOptions, overhead: int, truncate: bool
) -> list[Split]:
    """Cut or split documents as text so that each piece fits the model next to its query."""
    limit = input_limit(family, options)
    splits = fit_documents(
        family.backend,
        docs,
        max(limit - overhead, 1),  # a cap below the query's own length still leaves the document one token
        chunked=options.chunked,
        side=options.truncation_side,
        max_tokens=options.max_tokens_per_doc,
        max_chunks=options.max_chunks_per_doc,
    )
    if not truncate and not options.chunked:
        for position, split in zip(positions, splits, strict=True):
            if split.dropped:
                raise too_long(position, overhead + split.tokens, limit)
    return splits


def _check_lengths(
    family: Family, encoded: Sequence[Encoded], positions: Sequence[int], truncate: bool, param: str = "documents"
) -> list[int]:
    """Positions of truncated inputs; with truncation off, the first one raises InputTooLong."""
    cut = []
    for position, item in zip(positions, encoded, strict=True):
        if item.truncated:
            if not truncate:
                raise too_long(position, item.full_length, family.limits.max_length, param)
            cut.append(position)
    return cut
