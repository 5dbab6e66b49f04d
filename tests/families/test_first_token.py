"""The trimmed last layer (position 0 only) gives the stock model's logits (up to fp32 summation order: one-row
GEMMs use other kernels) and really computes one row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rerankd.families.first_token import FirstTokenLayer, trim_last_layer

PAIRS = [
    ("what is panda?", "The giant panda is a bear species endemic to China."),
    ("what is panda?", "hi"),
    ("a much longer query about the capital city of France and its history", "Paris " * 12),
]


def _logits(model: torch.nn.Module, path: Path) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    inputs = tokenizer(
        [q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation=True, max_length=64, return_tensors="pt"
    )
    with torch.inference_mode():
        return model(**inputs).logits


@pytest.mark.parametrize("fixture", ["bert_ce", "xlmr_ce"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_trimmed_equals_stock(request: pytest.FixtureRequest, fixture: str, attention: str) -> None:
    path = request.getfixturevalue(fixture)
    stock = AutoModelForSequenceClassification.from_pretrained(str(path), attn_implementation=attention).eval()
    trimmed = AutoModelForSequenceClassification.from_pretrained(str(path), attn_implementation=attention).eval()
    assert trim_last_layer(trimmed)
    assert isinstance(trimmed.base_model.encoder.layer[-1], FirstTokenLayer)
    got, want = _logits(trimmed, path), _logits(stock, path)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


def test_last_layer_computes_one_row(bert_ce: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(str(bert_ce)).eval()
    trim_last_layer(model)
    rows: list[torch.Size] = []
    last = model.base_model.encoder.layer[-1].layer
    last.intermediate.dense.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape))
    _logits(model, bert_ce)
    assert rows and rows[0][1] == 1  # (batch, 1, hidden): only position 0 goes through the feed-forward


def test_other_layouts_are_left_alone(bert_ce: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(str(bert_ce))
    model.config.position_embedding_type = "relative_key"
    assert not trim_last_layer(model)
    assert not trim_last_layer(torch.nn.Linear(2, 2))


def test_bare_encoders_need_first_token_pooling(bert_ce: Path) -> None:
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(bert_ce))
    assert not trim_last_layer(encoder)  # a bare encoder's every position may be read (mean pooling)
    assert trim_last_layer(encoder, first_token_pooling=True)
