"""The CLIP towers run by ONNX Runtime: a CPU inference runtime that beats torch on x86.

Measured on an AVX-512 EPYC, one thread (docs/indexing.md): a text query costs 7 ms of CPU
in ONNX Runtime int8 against 19 ms in torch int8 and 36 ms in torch fp32; an image query
35 to 39 ms (a ViT exported as VitTower) against 96 and 163 ms. Each tower of a model is
exported once with torch.onnx and quantised once (int8: dynamic quantisation of the weights,
as torch's int8 path does), then kept in a cache directory under a key made of the weights
themselves, so a fine-tuned checkpoint or another open_clip version never meets a stale
export.

Only open_clip's plain CLIP class (causal text tower pooled at the end-of-text token) is
exported; other architectures stay on torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from hibt.errors import ModelUnavailable
from hibt.indexer.precision import cpu_flags

RUNTIMES = ("auto", "torch", "onnx")
EXPORT_VERSION = 2  # bump when the exported graphs below change
OPSET = 18
# Without VNNI, x86 int8 kernels multiply u8 x s8 pairs into saturating 16-bit sums;
# 7-bit weights keep those sums in range (ONNX Runtime's advice for such CPUs).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def onnxruntime_installed() -> bool:
    """ONNX Runtime, and what torch.onnx needs to export for it."""
    return all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnx", "onnxscript"))


def exportable(model: torch.nn.Module) -> bool:
    """open_clip's CLIP with a causal, argmax-pooled text tower (what TextTower exports)."""
    import open_clip

    return (
        isinstance(model, open_clip.CLIP)
        and getattr(model, "text_pool_type", None) == "argmax"
        and getattr(model, "attn_mask", None) is not None
    )


def choose(precision: str, runtime: str, model: torch.nn.Module) -> tuple[str, str]:
    """(precision, runtime) for a requested pair, either of which may be "auto".

    auto runtime: ONNX Runtime wherever it is installed and the model exports, for fp32 and
    int8 (it has no bf16 CPU path). auto precision: int8 in ONNX Runtime, which was faster
    than torch bf16 weights even on an AVX512-BF16 CPU; on a CPU with AMX (not measured
    here) or without ONNX Runtime, precision.resolve_precision's rule.
    """
    from hibt.indexer.precision import resolve_precision

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be auto, torch or onnx, not {runtime!r}")
    onnx_ok = onnxruntime_installed() and exportable(model)
    if runtime == "onnx" and not onnx_ok:
        why = "onnxruntime is not installed" if exportable(model) else "this model does not export"
        raise ModelUnavailable(f"runtime onnx unavailable: {why} (use --runtime torch)")
    wants_onnx = runtime == "onnx" or (runtime == "auto" and onnx_ok)
    if precision == "auto":
        if wants_onnx and not ("amx_bf16" in cpu_flags() and runtime == "auto"):
            return "int8", "onnx"
        return resolve_precision("auto"), "torch"
    precision = resolve_precision(precision)
    if precision == "bf16":
        if runtime == "onnx":
            raise ValueError("ONNX Runtime has no bf16 CPU path: use precision fp32 or int8")
        return "bf16", "torch"
    return precision, "onnx" if wants_onnx else "torch"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hibt" / "onnx"


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every tensor's name, shape and bytes: the export's true identity (0.3 s
    for ViT-B-32's 600 MB; a hub tag or a seed could name different weights)."""
    import open_clip

    digest = hashlib.sha256(
        json.dumps([EXPORT_VERSION, OPSET, open_clip.__version__, torch.__version__]).encode()
    )
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        data = tensor.detach().contiguous().cpu()
        digest.update(memoryview(data.reshape(-1).view(torch.uint8).numpy()))  # no copy
    return digest.hexdigest()


class TextTower(torch.nn.Module):
    """open_clip's encode_text for tokens already cut after the last end-of-text token (the
    sequence length is a dynamic axis of the export; see model.encode_text_trimmed)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        m, length = self.model, tokens.shape[1]
        x = m.token_embedding(tokens) + m.positional_embedding[:length]
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
        projection = m.text_projection
        if projection is None:
            return x
        return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


class ImageTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


def plain_vit(visual: torch.nn.Module) -> bool:
    """open_clip's VisionTransformer pooled at its class token, with plain residual blocks
    (nn.MultiheadAttention, batch first): what :class:`VitTower` rewrites exactly."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
        return False
    conv = visual.conv1
    blocks = list(visual.transformer.resblocks)
    return (
        visual.pool_type == "tok"
        and visual.transformer.batch_first
        and conv.bias is None
        and conv.kernel_size == conv.stride
        and all(
            g * k == n
            for g, k, n in zip(visual.grid_size, conv.kernel_size, visual.image_size, strict=True)
        )
        and isinstance(visual.patch_dropout, torch.nn.Identity)
        and all(
            type(b) is ResidualAttentionBlock
            and isinstance(b.attn, torch.nn.MultiheadAttention)
            and b.attn.batch_first
            and b.attn.in_proj_weight is not None  # one projection for q, k and v
            and not hasattr(b, "ln_1_kv")
            for b in blocks
        )
    )


class VitTower(torch.nn.Module):
    """open_clip's encode_image for a plain ViT (:func:`plain_vit`), the same arithmetic in
    the form ONNX Runtime runs fastest (docs/indexing.md: 43 -> 34 ms CPU a ViT-B-32 query):

    - the patch embedding as one MatMul over the flattened patches, not a Conv: a MatMul
      with a constant weight is what dynamic int8 quantisation turns into int8 GEMM, while
      its ConvInteger ran 8 ms of the 43;
    - attention as one projection, scaled dot-product attention and the output projection,
      without nn.MultiheadAttention's exported transposes;
    - the last block only for the class token, the only one pooled: keys and values still
      come from every token, so the result is the same.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        weight = model.visual.conv1.weight.detach()  # (width, 3, patch, patch)
        self.register_buffer("patch_weight", weight.reshape(weight.shape[0], -1).t().contiguous())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.model.visual
        n, c, height, width = pixels.shape
        p = v.conv1.kernel_size[0]
        patches = pixels.reshape(n, c, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        x = patches.reshape(n, (height // p) * (width // p), c * p * p) @ self.patch_weight
        token = v.class_embedding.reshape(1, 1, -1).expand(n, 1, -1).to(x.dtype)
        x = v.ln_pre(torch.cat([token, x], dim=1) + v.positional_embedding.to(x.dtype))
        *blocks, last = v.transformer.resblocks
        for block in blocks:
            x = x + block.ls_1(attention(block.attn, block.ln_1(x)))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = x[:, :1] + last.ls_1(attention(last.attn, last.ln_1(x), queries=1))
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled


def attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor, queries: int = 0):
    """nn.MultiheadAttention(x, x, x) without a mask; ``queries``: only the first ones."""
    n, length, dim = x.shape
    heads = attn.num_heads
    qkv = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.reshape(n, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
    if queries:
        q = q[:, :, :queries]
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return attn.out_proj(out.transpose(1, 2).reshape(n, out.shape[2], dim))


def image_tower(model: torch.nn.Module) -> torch.nn.Module:
    return VitTower(model) if plain_vit(model.visual) else ImageTower(model)


def export(model: torch.nn.Module, folder: Path, image_size: int) -> None:
    """text.onnx and image.onnx (fp32) with a dynamic batch (and text length) axis.

    torch.export's exporter, as the older tracing one bakes the text length into
    nn.MultiheadAttention's reshapes."""
    tokens = torch.tensor([[49406, 320, 1125, 49407]] * 2, dtype=torch.long)
    pixels = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=2, max=int(model.attn_mask.shape[0]))
    # With gradients on: under no_grad, nn.MultiheadAttention takes a fused fast path that
    # has no ONNX form.
    with warnings.catch_warnings(), torch.enable_grad(), quiet():
        warnings.simplefilter("ignore")
        for tower, example, name, shapes in (
            (TextTower(model), tokens, "text", {"tokens": {0: batch, 1: length}}),
            (image_tower(model), pixels, "image", {"pixels": {0: batch}}),
        ):
            program = torch.onnx.export(
                tower.eval(),
                (example,),
                dynamo=True,
                input_names=list(shapes),
                output_names=["features"],
                dynamic_shapes=shapes,
                opset_version=OPSET,
                optimize=True,
                verbose=False,
            )
            program.save(str(folder / f"{name}.onnx"), external_data=False)


@contextlib.contextmanager
def quiet(level: int = logging.NOTSET):
    """torch.export prints its progress on stdout, the quantiser logs advice: a command's
    output is not the place."""
    logging.disable(level)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        logging.disable(logging.NOTSET)


def quantise(source: Path, out: Path, variant: str) -> None:
    """text{variant}.onnx and image{variant}.onnx: int8 weights of MatMul/Gemm, activations
    quantised on the fly (ONNX Runtime's dynamic quantisation, as torch's int8 path does)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet(logging.WARNING):  # its advice to pre-process is for static quantisation
        for tower in ("text", "image"):
            quantize_dynamic(
                source / f"{tower}.onnx",
                out / f"{tower}{variant}.onnx",
                weight_type=QuantType.QInt8,
                reduce_range=variant == ".int8r",
            )


def vnni() -> bool:
    return any(flag in cpu_flags() for flag in VNNI_FLAGS)


def variant_of(precision: str) -> str:
    """The file suffix of a precision's graphs: fp32 as exported, int8 with 7-bit weights
    on CPUs without VNNI."""
    if precision == "fp32":
        return ""
    return ".int8" if vnni() else ".int8r"


def exported(model: torch.nn.Module, cache: Path, image_size: int, variant: str) -> Path:
    """The cached folder of these weights' graphs, made when missing: every file appears
    whole or not at all, so a killed export or two processes at once leave no half file."""
    folder = cache / weights_digest(model)[:32]
    if all((folder / f"{tower}{variant}.onnx").is_file() for tower in ("text", "image")):
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=cache))
    try:
        fp32 = folder
        if not all((folder / f"{tower}.onnx").is_file() for tower in ("text", "image")):
            export(model, work, image_size)
            fp32 = work
        if variant:
            quantise(fp32, work, variant)
        folder.mkdir(exist_ok=True)
        for path in sorted(work.iterdir()):
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def export_for(model: torch.nn.Module, image_size: int, precision: str, cache: Path | None) -> Path:
    """The folder holding this model's graphs for ``precision`` (exported when missing)."""
    return exported(model, cache or default_cache(), image_size, variant_of(precision))


class OnnxTowers:
    """Both towers of one model as ONNX Runtime sessions over the graphs in ``folder``
    (:func:`export_for`); run() is thread-safe, so one instance serves every request."""

    def __init__(self, folder: Path, precision: str, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.variant = variant_of(precision)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: on a shared or busy CPU spinning only
        # takes time from the other work (decoders, other requests).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.text, self.image = (
            ort.InferenceSession(
                str(folder / f"{tower}{self.variant}.onnx"),
                options,
                providers=["CPUExecutionProvider"],
            )
            for tower in ("text", "image")
        )

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Features of int64 tokens (N, L), L cut after the last end-of-text token."""
        return self.text.run(None, {"tokens": tokens.astype(np.int64, copy=False)})[0]

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Features of normalised float32 pixels (N, 3, S, S)."""
        return self.image.run(None, {"pixels": pixels.astype(np.float32, copy=False)})[0]
