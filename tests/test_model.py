"""Model loading and the properties every model must have."""

from __future__ import annotations

import numpy as np
import pytest

from hibt.config import TINY_MODEL
from hibt.errors import ModelUnavailable
from hibt.indexer.model import Embedder, ModelSpec
from tests.datagen import drawing


def test_missing_weights_error_names_both_ways_out(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HIBT_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelUnavailable) as exc:
        Embedder(ModelSpec("ViT-B-32", "laion2b_s34b_b79k"))
    message = str(exc.value)
    assert "--checkpoint" in message and "internet" in message and TINY_MODEL in message


def test_missing_checkpoint_file(tmp_path) -> None:
    with pytest.raises(ModelUnavailable, match="checkpoint file not found"):
        Embedder(ModelSpec("ViT-B-32", None, str(tmp_path / "nope.pt")))


def test_unknown_model() -> None:
    with pytest.raises(ModelUnavailable, match="unknown open_clip model"):
        Embedder(ModelSpec("ViT-Imaginary", "x"))


def test_tiny_model_is_deterministic_and_normalised(embedder) -> None:
    other = Embedder(ModelSpec(TINY_MODEL))
    images = [drawing(i) for i in range(4)]
    a, b = embedder.encode_images(images), other.encode_images(images)
    assert a.shape == (4, embedder.dim) and np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    t = embedder.encode_texts(["a cat", "a dog"])
    assert t.shape == (2, embedder.dim) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert embedder.identity()["semantic"] is False


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_fast_paths_match_fp32(embedder, precision: str) -> None:
    """The fast paths' correctness guard: cosine >= 0.995 with fp32, same neighbours."""
    fast = Embedder(ModelSpec(TINY_MODEL), precision=precision)
    images = [drawing(i) for i in range(16)]
    texts = [f"a drawing number {i} of a red fox" for i in range(16)]
    for encode in ("encode_images", "encode_texts"):
        inputs = images if encode == "encode_images" else texts
        ref, got = getattr(embedder, encode)(inputs), getattr(fast, encode)(inputs)
        assert np.min(np.sum(ref * got, axis=1)) >= 0.995
        assert np.array_equal(np.argmax(ref @ ref.T, 1), np.argmax(got @ ref.T, 1))


def test_local_checkpoint_is_loaded(tmp_path) -> None:
    """The --checkpoint path, exercised with tiny-test weights saved by the test."""
    import torch

    source = Embedder(ModelSpec(TINY_MODEL))
    with torch.no_grad():
        for p in source.model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # weights that differ from the seeded init
    path = tmp_path / "tiny.pt"
    torch.save(source.model.state_dict(), path)
    loaded = Embedder(ModelSpec(TINY_MODEL, checkpoint=str(path)))
    images = [drawing(i) for i in range(3)]
    assert np.allclose(loaded.encode_images(images), source.encode_images(images), atol=1e-6)
    assert not np.allclose(
        loaded.encode_images(images), Embedder(ModelSpec(TINY_MODEL)).encode_images(images)
    )
    assert len(loaded.identity()["checkpoint_sha256"]) == 64


def test_trimmed_text_encoding_is_exact(embedder) -> None:
    """Cutting the padding after the end-of-text token changes nothing."""
    import torch

    from hibt.indexer.model import encode_text_trimmed

    tokens = embedder.tokenizer(["a fox", "a much longer caption about a lighthouse at night", ""])
    with torch.inference_mode():
        full = embedder.model.encode_text(tokens)
        trimmed = encode_text_trimmed(embedder.model, tokens)
    assert torch.allclose(full, trimmed, atol=1e-5)


def test_auto_precision_is_a_real_choice() -> None:
    from hibt.indexer.precision import resolve_precision

    assert resolve_precision("auto") in ("bf16", "int8", "fp32")
    assert resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("fp8")
