"""Model zoo: names, the offline corpus, digits-cnn training, onnx:PATH with user evaluators, STS-B parsing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from serving.artifacts import ArtifactError, read_manifest, sha256_file
from serving.corpus import english_sentences
from serving.variants import ensure_variant
from serving.zoo import EvaluatorError, UnknownModelError, get_model, list_models, read_stsb, train_digits_cnn


def mean_logit_evaluator(engine: object) -> dict[str, float]:
    """A user evaluator: returns {metric: value}."""
    out = engine.infer(np.zeros((4, 1, 8, 8), dtype=np.float32))  # type: ignore[attr-defined]
    return {"logit_rows": float(out.shape[0]), "mean_logit": float(out.mean())}


def raising_evaluator(engine: object) -> float:
    raise RuntimeError("labels file not found")


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match="known models are digits-cnn, minilm"):
        get_model("resnet-9000")
    assert list_models() == ["digits-cnn", "minilm"]


def test_corpus_is_real_english_and_deterministic() -> None:
    first = english_sentences(300)
    assert len(first) == 300 and len(set(first)) == 300
    assert all(s[0].isupper() and s.endswith(".") and len(s.split()) >= 6 for s in first)
    english_sentences.cache_clear()
    assert english_sentences(300) == first


def test_digits_cnn_trains_in_seconds_and_reproducibly() -> None:
    path = train_digits_cnn()
    first_sha = read_manifest(path)["sha256"]
    assert sha256_file(path) == first_sha
    path.unlink()
    t0 = time.perf_counter()
    again = train_digits_cnn()
    assert time.perf_counter() - t0 < 60
    assert sha256_file(again) == first_sha  # same seed, same split, one thread -> same weights


def test_onnx_path_model_with_user_evaluator() -> None:
    src = ensure_variant("digits-cnn", "onnx-fp32").path
    from serving.engines import load_engine

    name = f"onnx:{src}::tests.serving.test_zoo:mean_logit_evaluator"
    spec = get_model(name)
    art = ensure_variant(name, "onnx-int8-dynamic-perchannel")
    assert art.manifest["parent"] == "onnx-fp32" and art.manifest["model"] == spec.name
    result = spec.evaluate(load_engine(art.path))
    assert result.metric == "logit_rows" and result.value == 4.0 and "mean_logit" in result.details


def test_onnx_path_errors_name_the_cause(tmp_path: Path) -> None:
    src = ensure_variant("digits-cnn", "onnx-fp32").path
    with pytest.raises(ArtifactError, match="does not exist"):
        get_model(f"onnx:{tmp_path / 'nope.onnx'}")
    with pytest.raises(EvaluatorError, match="cannot be imported"):
        get_model(f"onnx:{src}::no_such_module_xyz:fn")
    with pytest.raises(EvaluatorError, match="not of the form module:function"):
        get_model(f"onnx:{src}", evaluator="justamodule")
    from serving.engines import load_engine

    spec = get_model(f"onnx:{src}::tests.serving.test_zoo:raising_evaluator")
    with pytest.raises(EvaluatorError, match=r"raised RuntimeError: labels file not found"):
        spec.evaluate(load_engine(src))


def test_read_stsb_keeps_first_seven_columns_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "sts.csv"
    path.write_text(
        'main-news\tf\t2012\t0001\t3.5\t"Quoted" start.\tplain two\textra\tcols\n'
        "main-forums\tf\t2014\t0002\t0.0\tone\ttwo\n",
        encoding="utf-8",
    )
    left, right, gold = read_stsb(path)
    assert left == ['"Quoted" start.', "one"] and right == ["plain two", "two"]
    assert gold.tolist() == [3.5, 0.0]


def test_digits_trains_even_when_first_reached_inside_inference_mode(tmp_path, monkeypatch) -> None:
    """The first export of a variant runs under inference_mode; training the weights there must still work."""
    import torch

    from serving import zoo
    from serving.settings import get_settings

    monkeypatch.setenv("INFEROPS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        with torch.inference_mode():
            path = zoo.train_digits_cnn()
        assert path.exists() and path.stat().st_size > 0
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
