"""The benchmark workloads live in the package (``rerankd.workloads``) so ``rerankd bench`` uses the same ones."""

from rerankd.workloads import WORKLOADS, Workload, long_docs, rerank_100, rerank_batch

__all__ = ["WORKLOADS", "Workload", "long_docs", "rerank_100", "rerank_batch"]
