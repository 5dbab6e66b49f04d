"""Benchmarks: fixed seeded workloads, peers side by side in one process tree (see README.md here)."""
