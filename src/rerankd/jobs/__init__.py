"""One scoring call as data (:mod:`.job`: options, the encoded inputs, how to read their outputs, the primary score
and the ranking) and how a call is prepared (:mod:`.prepare`: encoding, truncation, chunking)."""

from __future__ import annotations

from rerankd.jobs.job import (
    DEFAULT_OPTIONS,
    Finish,
    ScoreOptions,
    ScoringJob,
    call_options,
    cosine_finisher,
    describe_cut,
    identity,
    primary_score,
    ranking,
    score_finisher,
    too_long,
)
from rerankd.jobs.prepare import UNBOUNDED, Budget, Defaults, input_limit, prepare_embed, prepare_pairs

__all__ = [
    "DEFAULT_OPTIONS",
    "UNBOUNDED",
    "Budget",
    "Defaults",
    "Finish",
    "ScoreOptions",
    "ScoringJob",
    "call_options",
    "cosine_finisher",
    "describe_cut",
    "identity",
    "input_limit",
    "prepare_embed",
    "prepare_pairs",
    "primary_score",
    "ranking",
    "score_finisher",
    "too_long",
]
