"""Peers that need their own venv (pins conflicting with rerankd's), driven through benchmarks/peers/worker.py."""
