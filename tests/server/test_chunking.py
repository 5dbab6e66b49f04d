"""Long documents: windows, cuts, and the library's chunked rank (document score = best chunk's score)."""

from __future__ import annotations

import itertools

import pytest

from rerankd import InputTooLong, Reranker
from rerankd.chunking import cut_document, fit_documents, split_document, token_offsets, window_starts
from rerankd.families.base import CallOptions, PairScorer
from rerankd.jobs import ScoreOptions

LONG = " ".join(f"panda{i % 7} bamboo forest china" if i % 5 == 0 else "the river of paris city" for i in range(120))


def test_window_starts_cover_everything_with_overlap() -> None:
    assert window_starts(10, 20, 4) == [0]
    starts = window_starts(100, 30, 5)
    assert starts[0] == 0 and starts[-1] == 70
    assert all(b - a == 25 for a, b in itertools.pairwise(starts[:-1]))  # the last window ends at the end
    covered = set()
    for start in starts:
        covered |= set(range(start, start + 30))
    assert covered == set(range(100))


def test_split_document_windows_are_exact_substrings(bert: Reranker) -> None:
    backend = bert.family.backend
    offsets = token_offsets(backend, [LONG])[0]
    split = split_document(LONG, offsets, 40)
    assert len(split.windows) > 3 and not split.dropped
    for window in split.windows:
        assert window in LONG
        assert len(backend.encode(window, add_special_tokens=False).ids) <= 40 + 1
    capped = split_document(LONG, offsets, 40, max_chunks=2)
    assert capped.windows == split.windows[:2] and capped.dropped
    short = split_document(LONG, offsets, 40, max_tokens=30)
    assert len(short.windows) == 1 and short.kept == 30 and short.dropped


def test_cut_document_keeps_start_or_end(bert: Reranker) -> None:
    backend = bert.family.backend
    offsets = token_offsets(backend, [LONG])[0]
    right = cut_document(LONG, offsets, 10, "right")
    left = cut_document(LONG, offsets, 10, "left")
    assert LONG.startswith(right) and LONG.endswith(left)
    assert len(backend.encode(right, add_special_tokens=False).ids) == 10
    assert cut_document("short", token_offsets(backend, ["short"])[0], 10) == "short"
    fitted = fit_documents(backend, ["short one", LONG], 20, side="left")
    assert fitted[0].windows == ("short one",) and not fitted[0].dropped
    assert LONG.endswith(fitted[1].windows[0]) and fitted[1].dropped


def test_chunked_rank_scores_each_document_by_its_best_chunk(bert: Reranker) -> None:
    query = "giant panda bamboo"
    docs = ["a short document about a panda", LONG]
    ranked = {r.index: r.score for r in bert.rank(query, docs, max_chunks_per_doc=50)}
    job = bert.prepare_pairs([(query, d) for d in docs], ScoreOptions(max_chunks_per_doc=50))
    assert len(job.items) > 3  # the long document became several model inputs
    assert isinstance(bert.family, PairScorer)
    overhead = len(bert.family.encode_pairs(query, [""], CallOptions())[0])
    offsets = token_offsets(bert.family.backend, [LONG])[0]
    windows = split_document(LONG, offsets, bert.info.max_length - overhead - 2).windows
    chunk_scores = bert.score([(query, w) for w in windows])
    assert ranked[1] == pytest.approx(max(chunk_scores), abs=1e-6)
    assert ranked[0] == pytest.approx(bert.score([(query, docs[0])])[0], abs=1e-6)
    assert max(chunk_scores) > min(chunk_scores)  # the max really picks a chunk


def test_chunked_token_counts_and_warnings(bert: Reranker) -> None:
    job = bert.prepare_pairs([("panda", LONG)], ScoreOptions(max_chunks_per_doc=2))
    assert len(job.items) == 2 and job.tokens == [len(job.items[0]) + len(job.items[1])]
    assert job.cut == [0] and "only partly scored" in job.warnings[0]
    whole = bert.prepare_pairs([("panda", LONG)], ScoreOptions(max_chunks_per_doc=100))
    assert whole.cut == [] and whole.warnings == []


def test_truncation_warning_and_strict_rejection(bert: Reranker) -> None:
    job = bert.prepare_pairs([("panda", "short"), ("panda", LONG)])
    assert job.cut == [1] and "truncated" in job.warnings[0] and "document 1" in job.warnings[0]
    with pytest.raises(InputTooLong) as info:
        bert.prepare_pairs([("panda", "short"), ("panda", LONG)], ScoreOptions(truncate=False))
    assert info.value.index == 1 and info.value.tokens > bert.info.max_length


def test_left_truncation_and_prompt_cap(bert: Reranker) -> None:
    left = bert.prepare_pairs([("panda", LONG)], ScoreOptions(truncation_side="left"))
    right = bert.prepare_pairs([("panda", LONG)])
    assert left.items[0].input_ids != right.items[0].input_ids
    assert len(left.items[0]) <= bert.info.max_length
    capped = bert.prepare_pairs([("panda", LONG)], ScoreOptions(max_input_tokens=32))
    assert len(capped.items[0]) <= 33 and capped.cut == [0]
    with pytest.raises(InputTooLong):
        bert.prepare_pairs([("panda", LONG)], ScoreOptions(max_input_tokens=32, truncate=False))


def test_bi_encoder_chunking_uses_the_best_window(minilm: Reranker) -> None:
    query = "giant panda bamboo"
    long_doc = LONG * 3
    ranked = minilm.rank(query, [long_doc], max_chunks_per_doc=20)
    offsets = token_offsets(minilm.family.backend, [long_doc])[0]
    windows = split_document(long_doc, offsets, minilm.info.max_length - 2 - 2).windows  # [CLS] ... [SEP], slack
    assert len(windows) > 2
    per_window = minilm.score([(query, w) for w in windows])
    assert ranked[0].score == pytest.approx(max(per_window), abs=1e-6)
