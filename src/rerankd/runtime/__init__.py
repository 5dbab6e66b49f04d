"""Batching and execution: planning, devices, running forward passes. Never interprets scores."""
