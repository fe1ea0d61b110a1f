"""The encoder runtimes (indexer/runtime.py): every path agrees with torch fp32, the choice
is automatic and overridable, and exports are made once per model's weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hibt.config import TINY_MODEL
from hibt.errors import ModelUnavailable
from hibt.indexer import runtime
from hibt.indexer.model import Embedder, ModelSpec
from tests.datagen import drawing

# Texts of different lengths in one batch: each row pools at its own end-of-text token.
TEXTS = [
    "fox",
    "a drawing of a red fox",
    "a lighthouse at night, drawn in ink by Jane Doe for a book of sea stories",
    *[f"a drawing number {i} of a {w}" for i, w in enumerate(["owl", "teapot", "tree"] * 4)],
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.mark.parametrize(
    ("precision", "engine", "vnni"),
    [
        ("fp32", "onnx", True),
        ("int8", "onnx", True),
        ("int8", "onnx", False),  # CPUs without VNNI get 7-bit weights
        ("bf16", "torch", True),  # the path auto takes on AMX CPUs
    ],
)
def test_every_path_matches_fp32(embedder, cache, monkeypatch, precision, engine, vnni) -> None:
    """cosine >= 0.995 with torch fp32 and the same nearest neighbours, texts and images."""
    if precision == "int8" and vnni and not runtime.vnni():
        # Without VNNI, ONNX Runtime's AVX2 kernels add u8 x s8 products in pairs into
        # saturating 16-bit sums: 8-bit weights overflow there, which is why such CPUs get
        # 7-bit ones (the case below); the VNNI path can only be measured on a VNNI CPU.
        pytest.skip("8-bit int8 weights need a CPU with VNNI to be exact")
    monkeypatch.setattr(runtime, "vnni", lambda: vnni)
    fast = Embedder(ModelSpec(TINY_MODEL), precision, engine, cache)
    assert (fast.precision, fast.runtime) == (precision, engine)
    images = [drawing(i) for i in range(16)]
    for encode, inputs in (("encode_images", images), ("encode_texts", TEXTS)):
        ref, got = getattr(embedder, encode)(inputs), getattr(fast, encode)(inputs)
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.min(np.sum(ref * got, axis=1)) >= 0.995
        assert np.array_equal(np.argmax(ref @ ref.T, 1), np.argmax(got @ ref.T, 1))


def test_batch_rows_equal_single_queries(cache) -> None:
    """The exported text graph keeps length and batch dynamic: a batch of mixed lengths
    gives each text what it gets alone."""
    fast = Embedder(ModelSpec(TINY_MODEL), "fp32", "onnx", cache)
    together = fast.encode_texts(TEXTS[:3])
    alone = np.concatenate([fast.encode_texts([t]) for t in TEXTS[:3]])
    assert np.allclose(together, alone, atol=1e-5)


def test_export_is_cached_per_weights(embedder, cache, monkeypatch) -> None:
    import torch

    Embedder(ModelSpec(TINY_MODEL), "int8", "onnx", cache)  # made (or found) here

    def no_export(*args) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(runtime, "export", no_export)
    again = Embedder(ModelSpec(TINY_MODEL), "int8", "onnx", cache)
    assert again.encode_texts(["fox"]).shape == (1, embedder.dim)
    other = Embedder(ModelSpec(TINY_MODEL))
    with torch.no_grad():
        other.model.visual.proj.mul_(2)  # other weights: another key, never the cached graphs
    assert runtime.weights_digest(other.model) != runtime.weights_digest(embedder.model)


def cpu_with(monkeypatch, *flags: str) -> None:
    from hibt.indexer import precision

    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))


def test_choice_is_automatic_and_overridable(embedder, monkeypatch) -> None:
    model = embedder.model
    monkeypatch.setattr(runtime, "onnxruntime_installed", lambda: True)
    cpu_with(monkeypatch, "avx2", "fma")
    assert runtime.choose("auto", "auto", model) == ("int8", "onnx")
    cpu_with(monkeypatch, "avx512f", "avx512_bf16", "avx512_vnni")  # measured: int8 wins
    assert runtime.choose("auto", "auto", model) == ("int8", "onnx")
    cpu_with(monkeypatch, "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")
    assert runtime.choose("auto", "auto", model) == ("bf16", "torch")
    assert runtime.choose("auto", "onnx", model) == ("int8", "onnx")
    assert runtime.choose("fp32", "auto", model) == ("fp32", "onnx")
    assert runtime.choose("auto", "torch", model)[1] == "torch"
    assert runtime.choose("bf16", "auto", model) == ("bf16", "torch")
    with pytest.raises(ValueError, match="no bf16"):
        runtime.choose("bf16", "onnx", model)
    with pytest.raises(ValueError, match="runtime must be"):
        runtime.choose("auto", "tensorrt", model)
    monkeypatch.setattr(runtime, "onnxruntime_installed", lambda: False)
    assert runtime.choose("auto", "auto", model)[1] == "torch"
    with pytest.raises(ModelUnavailable, match="onnxruntime is not installed"):
        runtime.choose("int8", "onnx", model)


def test_exported_vit_is_encode_image() -> None:
    """The image tower as exported (patches through one MatMul, the last block for the class
    token only) computes open_clip's encode_image; other pooling keeps open_clip's form."""
    import torch

    from hibt.indexer.model import create

    model = create(ModelSpec(TINY_MODEL)).eval()
    assert isinstance(runtime.image_tower(model), runtime.VitTower)
    pixels = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        got, ref = runtime.VitTower(model)(pixels), model.encode_image(pixels)
    assert torch.allclose(got, ref, atol=1e-5)
    model.visual.pool_type = "avg"
    assert isinstance(runtime.image_tower(model), runtime.ImageTower)
