"""``rerankd serve``: one HTTP server speaking the Cohere, Jina, TEI, vLLM, Infinity and OpenAI dialects."""

from __future__ import annotations

from rerankd.server.app import create_app

__all__ = ["create_app"]
