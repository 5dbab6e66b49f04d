"""Measure rerankers: ranking quality on BEIR-layout datasets (with A/B tests), numerical precision of one
configuration against another, and a quick smoke test. Needs the ``eval`` extra: ``pip install 'rerankd[eval]'``.

Library functions never print; long steps report through an optional ``progress(stage, done, total)``
callback. The ``rerankd eval``, ``rerankd compare`` and ``rerankd smoke`` commands are thin front ends.
"""

from __future__ import annotations

from rerankd.evaluation.builtin_inputs import SMOKE_CASES, SmokeCase, default_compare_pairs
from rerankd.evaluation.configurations import (
    Configuration,
    compare_configurations,
    compare_embeddings,
    compare_rerankers,
    embeddings_report,
    parse_configuration,
    scores_report,
)
from rerankd.evaluation.datasets import (
    BeirDataset,
    Qrels,
    QueryDocumentPair,
    Run,
    load_beir,
    load_pairs_jsonl,
    load_trec_run,
    write_trec_run,
)
from rerankd.evaluation.metrics import DEFAULT_MEASURES, evaluate_run, mean_measures, parse_measure, ranked_documents
from rerankd.evaluation.precision import (
    ErrorStats,
    PrecisionReport,
    RankAgreement,
    Thresholds,
    compare_outputs,
    error_stats,
    rank_agreement,
)
from rerankd.evaluation.progress import StageProgress
from rerankd.evaluation.quality import (
    QualityReport,
    SystemResult,
    SystemRun,
    build_quality_report,
    evaluate_rerankers,
    first_stage_bm25,
    first_stage_dense,
    first_stage_run_file,
    rerank_system,
)
from rerankd.evaluation.retrieval import (
    bm25_first_stage,
    dense_first_stage,
    rerank_run,
    run_file_first_stage,
    top_k_run,
)
from rerankd.evaluation.significance import PairedComparison, compare_paired, paired_t_test, randomisation_test
from rerankd.evaluation.smoke import SmokeReport, SmokeResult, run_smoke

__all__ = [
    "DEFAULT_MEASURES",
    "SMOKE_CASES",
    "BeirDataset",
    "Configuration",
    "ErrorStats",
    "PairedComparison",
    "PrecisionReport",
    "Qrels",
    "QualityReport",
    "QueryDocumentPair",
    "RankAgreement",
    "Run",
    "SmokeCase",
    "SmokeReport",
    "SmokeResult",
    "StageProgress",
    "SystemResult",
    "SystemRun",
    "Thresholds",
    "bm25_first_stage",
    "build_quality_report",
    "compare_configurations",
    "compare_embeddings",
    "compare_outputs",
    "compare_paired",
    "compare_rerankers",
    "default_compare_pairs",
    "dense_first_stage",
    "embeddings_report",
    "error_stats",
    "evaluate_rerankers",
    "evaluate_run",
    "first_stage_bm25",
    "first_stage_dense",
    "first_stage_run_file",
    "load_beir",
    "load_pairs_jsonl",
    "load_trec_run",
    "mean_measures",
    "paired_t_test",
    "parse_configuration",
    "parse_measure",
    "randomisation_test",
    "rank_agreement",
    "ranked_documents",
    "rerank_run",
    "rerank_system",
    "run_file_first_stage",
    "run_smoke",
    "scores_report",
    "top_k_run",
    "write_trec_run",
]
