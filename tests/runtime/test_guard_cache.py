"""The dtype guard's verdict cache (issue 20 item 1): the second load of the same weights on the same machine and
software reuses the first load's verdict (no probe, no float32 copy) and gets the same dtype, agreement and scores;
anything the verdict depends on changing means a new probe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from rerankd import Reranker
from rerankd.runtime import dtype_guard, guard_cache
from rerankd.runtime.dtype_guard import PROBE_PAIRS


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "guard-cache"
    monkeypatch.setenv("RERANKD_GUARD_CACHE", str(folder))
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    return folder


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """Counts the guard's runs (the probe, not the cached path)."""
    runs: list[torch.dtype] = []
    real = dtype_guard.guard_reduced_precision

    def counting(probe, cast, dtype):  # type: ignore[no-untyped-def]
        runs.append(dtype)
        return real(probe, cast, dtype)

    monkeypatch.setattr(dtype_guard, "guard_reduced_precision", counting)
    return runs


def test_five_loads_one_probe_same_verdict(cache: Path, probes: list[torch.dtype], minilm_path: Path) -> None:
    loads = [Reranker.from_pretrained(minilm_path, device="cpu") for _ in range(5)]  # a Path works as a name
    assert probes == [torch.bfloat16]  # only the first load probed
    assert len(list(cache.glob("*.json"))) == 1
    first = loads[0].info
    assert first.dtype == "bfloat16" and first.dtype_check is not None and first.dtype_check.passed
    for model in loads[1:]:
        assert (model.info.dtype, model.info.dtype_check) == (first.dtype, first.dtype_check)
        assert {p.dtype for p in model.family.weights().parameters()} == {torch.bfloat16}  # type: ignore[union-attr]
    assert loads[4].score(PROBE_PAIRS) == loads[0].score(PROBE_PAIRS)


def test_a_remembered_fallback_loads_float32_directly(
    cache: Path, probes: list[torch.dtype], monkeypatch: pytest.MonkeyPatch, bert_ce: Path
) -> None:
    failing = dtype_guard.Agreement(0.5, 1.0, False, 1.0, ("rank agreement 0.5000 below 0.9990",))
    monkeypatch.setattr(dtype_guard, "compare_scores", lambda *a, **k: failing)
    first = Reranker.from_pretrained(str(bert_ce), device="cpu")
    second = Reranker.from_pretrained(str(bert_ce), device="cpu")
    assert probes == [torch.bfloat16]
    assert first.info.dtype == second.info.dtype == "float32"
    assert second.info.dtype_check == failing
    assert second.score(PROBE_PAIRS) == Reranker.from_pretrained(str(bert_ce), dtype="float32").score(PROBE_PAIRS)


def test_what_the_verdict_depends_on_makes_a_new_probe(
    cache: Path, probes: list[torch.dtype], monkeypatch: pytest.MonkeyPatch, bert_ce: Path, tmp_path: Path
) -> None:
    Reranker.from_pretrained(str(bert_ce), device="cpu")
    Reranker.from_pretrained(str(bert_ce), device="cpu", max_length=64)  # load option: other probe scores
    assert len(probes) == 2
    monkeypatch.setattr(guard_cache, "cpu_flags", lambda: {"avx2", "avx512_bf16"})  # another machine
    Reranker.from_pretrained(str(bert_ce), device="cpu")
    assert len(probes) == 3
    copy = tmp_path / "rewritten"  # the same folder name, a weight file rewritten
    copy.mkdir()
    for file in bert_ce.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    Reranker.from_pretrained(str(copy), device="cpu")
    weights = next(copy.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    Reranker.from_pretrained(str(copy), device="cpu")
    assert len(probes) == 5


def test_unreadable_or_foreign_entries_are_probed_again(cache: Path, probes: list[torch.dtype], bert_ce: Path) -> None:
    Reranker.from_pretrained(str(bert_ce), device="cpu")
    (entry,) = cache.glob("*.json")
    entry.write_text("{not json")
    Reranker.from_pretrained(str(bert_ce), device="cpu")
    stored = json.loads(entry.read_text())
    stored["key"]["software"] = "rerankd 0.0.1"  # a digest collision would still not be trusted
    entry.write_text(json.dumps(stored))
    Reranker.from_pretrained(str(bert_ce), device="cpu")
    assert len(probes) == 3


def test_cache_off_or_unwritable_only_costs_the_probe(
    monkeypatch: pytest.MonkeyPatch, probes: list[torch.dtype], bert_ce: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    monkeypatch.setenv("RERANKD_GUARD_CACHE", "off")
    Reranker.from_pretrained(str(bert_ce), device="cpu")
    Reranker.from_pretrained(str(bert_ce), device="cpu")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv("RERANKD_GUARD_CACHE", str(blocked / "cache"))
    model = Reranker.from_pretrained(str(bert_ce), device="cpu")
    assert len(probes) == 3 and model.info.dtype_check is not None
