"""The benchmark workloads live in the package (``rerankd.bench.workloads``) so ``rerankd bench`` uses the same ones."""

from rerankd.bench.workloads import WORKLOADS, Workload, long_docs, rerank_100, rerank_batch

__all__ = ["WORKLOADS", "Workload", "long_docs", "rerank_100", "rerank_batch"]
