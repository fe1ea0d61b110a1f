"""CLIP models through open_clip: loading (pretrained, local checkpoint or the built-in tiny
test model), preprocessing and L2-normalised image and text embeddings."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import open_clip
import torch
from PIL import Image

from hibt.config import RANDOM_WEIGHTS, TINY_MODEL, Settings
from hibt.errors import ModelUnavailable
from hibt.indexer.model_input import resize_center_crop
from hibt.indexer.precision import resolve_precision
from hibt.indexer.runtime import OnnxTowers, choose, export_for

CONFIG_DIR = Path(__file__).parent / "model_configs"
TINY_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str | None = None
    checkpoint: str | None = None

    @property
    def semantic(self) -> bool:
        """Only trained weights make CLIP scores mean anything."""
        trained = bool(self.checkpoint) or self.pretrained not in (None, RANDOM_WEIGHTS)
        return self.name != TINY_MODEL and trained


def unavailable_message(spec: ModelSpec, reason: str) -> str:
    return (
        f"cannot load weights for {spec.name} ({spec.checkpoint or spec.pretrained}): {reason}\n"
        "Two ways out:\n"
        f"  1. on a machine with internet access, run any hibt command once with --model "
        f"{spec.name} --pretrained {spec.pretrained or 'TAG'}; open_clip downloads the weights "
        "into its cache (~/.cache/huggingface) and later runs work offline;\n"
        "  2. pass --checkpoint FILE (or HIBT_CHECKPOINT) with a local open_clip checkpoint "
        f"for {spec.name}.\n"
        f"For an offline smoke run only, --model {TINY_MODEL} uses a built-in model with random "
        "weights: its results are NOT semantic."
    )


def hub_reachable() -> bool:
    """Fail fast when there is no network instead of waiting out the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HIBT_OFFLINE") == "1":
        return False
    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname or "", 443)
        return True
    except OSError:
        return False


def cached_pretrained(spec: ModelSpec) -> str | None:
    """Path of already-downloaded hub weights, without touching the network."""
    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained or "")
    hub_id = (cfg or {}).get("hf_hub", "")
    if not hub_id:
        return None
    from huggingface_hub import hf_hub_download

    repo_id = "/".join(hub_id.strip("/").split("/")[:2])
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        with contextlib.suppress(Exception):
            return hf_hub_download(repo_id, name, local_files_only=True)
    return None


def weights_source(spec: ModelSpec) -> str | None:
    """What :func:`create` loads the weights from (a checkpoint file, a cached or
    downloadable pretrained tag; None: random weights), or the ModelUnavailable it would
    raise, found without loading anything: a Ray driver checks it before its workers load."""
    if spec.name == TINY_MODEL:
        open_clip.add_model_config(CONFIG_DIR / f"{TINY_MODEL}.json")
    elif spec.name not in open_clip.list_models():
        raise ModelUnavailable(f"unknown open_clip model {spec.name!r}")
    if spec.checkpoint:
        if not Path(spec.checkpoint).is_file():
            raise ModelUnavailable(unavailable_message(spec, "checkpoint file not found"))
        return spec.checkpoint
    if spec.name == TINY_MODEL or spec.pretrained == RANDOM_WEIGHTS:
        return None
    if not spec.pretrained:
        raise ModelUnavailable(unavailable_message(spec, "no --pretrained tag or --checkpoint"))
    if spec.pretrained not in open_clip.list_pretrained_tags_by_model(spec.name):
        raise ModelUnavailable(f"open_clip has no weights {spec.pretrained!r} for {spec.name}")
    local = cached_pretrained(spec)
    if local is None and not hub_reachable():
        raise ModelUnavailable(unavailable_message(spec, "not cached and the hub is unreachable"))
    return local or spec.pretrained


def create(spec: ModelSpec) -> torch.nn.Module:
    source = weights_source(spec)
    if source is None:
        torch.manual_seed(TINY_SEED)
        logging.disable(logging.WARNING)  # open_clip warns that the weights are random: known
        try:
            return open_clip.create_model(spec.name, pretrained=None)
        finally:
            logging.disable(logging.NOTSET)
    if spec.checkpoint:
        return open_clip.create_model(spec.name, pretrained=source)
    try:
        return open_clip.create_model(spec.name, pretrained=source)
    except Exception as exc:  # open_clip raises bare RuntimeErrors for download failures
        raise ModelUnavailable(unavailable_message(spec, str(exc).splitlines()[0])) from exc


def checkpoint_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Embedder:
    """Image and text encoders of one CLIP model, returning float32 unit vectors."""

    def __init__(
        self,
        spec: ModelSpec,
        precision: str = "fp32",
        runtime: str = "torch",
        cache: Path | None = None,
        device: str = "cpu",
    ) -> None:
        """``precision``: fp32, bf16, int8, or auto (the fastest that this CPU, or this GPU
        when ``device`` is one, runs well). ``runtime``: torch, onnx (ONNX Runtime, graphs
        exported once into ``cache``) or auto (runtime.choose); a GPU runs torch."""
        torch.set_flush_denormal(True)  # denormals in tiny activations cost 100x on x86
        self.spec = spec
        self.device = torch.device(device)
        self.model: torch.nn.Module | None = create(spec).eval()
        self.checkpoint_sha256 = checkpoint_digest(spec.checkpoint) if spec.checkpoint else None
        self.tokenizer = open_clip.get_tokenizer(spec.name)
        cfg = self.model.visual.preprocess_cfg
        self.image_size = int(
            cfg["size"][0] if isinstance(cfg["size"], tuple | list) else cfg["size"]
        )
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        if self.device.type == "cpu":
            self.precision, self.runtime = choose(precision, runtime, self.model)
        else:  # ONNX Runtime here is the CPU's
            self.precision, self.runtime = resolve_precision(precision, self.device.type), "torch"
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.towers: OnnxTowers | None = None
        if self.runtime == "onnx":
            folder = export_for(self.model, self.image_size, self.precision, cache)
            self.model = None  # ONNX Runtime holds the weights now: 600 MB less for ViT-B-32
            self.towers = OnnxTowers(folder, self.precision)
        elif self.precision == "bf16":
            # bf16 weights, not autocast: autocast re-casts every weight on every call and
            # runs layer norms in fp32, and gained nothing over fp32 on an AMX Xeon (#27).
            self.model = self.model.to(torch.bfloat16)
        elif self.precision == "int8":
            with warnings.catch_warnings():  # deprecated in favour of torchao; still shipped
                warnings.simplefilter("ignore")
                self.model = torch.ao.quantization.quantize_dynamic(
                    self.model, {torch.nn.Linear}, dtype=torch.qint8
                )
        if self.model is not None:
            self.model.to(self.device)
        self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
        with torch.no_grad():
            self.dim = int(self.encode_texts(["probe"]).shape[1])

    def describe(self) -> str:
        """What encodes, as printed when a command starts: "onnxruntime int8"."""
        return f"{'onnxruntime' if self.runtime == 'onnx' else 'torch'} {self.precision}"

    def identity(self) -> dict:
        """What the manifest records so a server can refuse a mismatched model."""
        return {
            "name": self.spec.name,
            "pretrained": None if self.spec.checkpoint else self.spec.pretrained,
            "checkpoint_sha256": self.checkpoint_sha256,
            "dim": self.dim,
            "image_size": self.image_size,
            "semantic": self.spec.semantic,
        }

    def pixels(self, image: Image.Image) -> np.ndarray:
        return resize_center_crop(image, self.image_size)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Nothing to do: bf16 models carry bf16 weights (kept for callers of open_clip's
        own methods)."""
        return contextlib.nullcontext()

    @staticmethod
    def normalise(features: torch.Tensor) -> np.ndarray:
        features = features.float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()

    @torch.inference_mode()
    def encode_pixels(self, batch: np.ndarray) -> np.ndarray:
        """Embed a uint8 batch (N, H, W, 3) of :meth:`pixels` outputs."""
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        x = (x - self.mean) / self.std
        if self.towers is not None:
            return self.normalise(torch.from_numpy(self.towers.encode_pixels(x.numpy())))
        return self.normalise(self.model.encode_image(x.to(self.dtype)))

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.encode_pixels(np.stack([self.pixels(im) for im in images]))

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts)
        if self.towers is not None:  # cut after the last end-of-text token, the highest id
            tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
            return self.normalise(torch.from_numpy(self.towers.encode_tokens(tokens.numpy())))
        return self.normalise(encode_text_trimmed(self.model, tokens.to(self.device)))


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text without the padding after the last end-of-text token.

    The text tower is causal and pools at the end-of-text token, so positions after it never
    influence the result: cutting them is exact, and a short query costs a few tokens
    instead of 77. Other architectures take open_clip's own path.
    """
    pool = getattr(model, "text_pool_type", None)
    mask = getattr(model, "attn_mask", None)
    if not isinstance(model, open_clip.CLIP) or pool != "argmax" or mask is None:
        return model.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast = model.positional_embedding.dtype  # open_clip's probe breaks on quantised layers
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def spec_from(settings: Settings, built=None) -> ModelSpec:
    """The model the settings name or, to query an index, the model that built it (``built``:
    its manifest's ModelInfo), with the configured local checkpoint in either case. The tiny
    test model has no pretrained tag."""
    name, pretrained = (
        (built.name, built.pretrained) if built else (settings.model, settings.pretrained)
    )
    return ModelSpec(name, None if name == TINY_MODEL else pretrained, settings.checkpoint)


def embedder_from(settings: Settings, built=None, device: str = "cpu") -> Embedder:
    """The one way to get an embedder from settings (see :func:`spec_from`); says on stderr
    what encodes, as the runtime and precision may have been chosen for this CPU."""
    cache = Path(settings.model_cache) if settings.model_cache else None
    spec = spec_from(settings, built)
    embedder = Embedder(spec, settings.precision, settings.runtime, cache, device)
    print(f"encoder: {embedder.spec.name} on {embedder.describe()}", file=sys.stderr)
    return embedder


def declared_identity(spec: ModelSpec) -> dict:
    """The identity an Embedder of ``spec`` would report, from open_clip's model config
    alone: enough to record which model made published embeddings without loading weights."""
    if spec.name == TINY_MODEL:
        open_clip.add_model_config(CONFIG_DIR / f"{TINY_MODEL}.json")
    config = open_clip.get_model_config(spec.name)
    if config is None:
        raise ModelUnavailable(f"unknown open_clip model {spec.name!r}")
    size = config["vision_cfg"].get("image_size", 224)
    return {
        "name": spec.name,
        "pretrained": None if spec.checkpoint else spec.pretrained,
        "checkpoint_sha256": checkpoint_digest(spec.checkpoint) if spec.checkpoint else None,
        "dim": int(config["embed_dim"]),
        "image_size": int(size[0] if isinstance(size, list | tuple) else size),
        "semantic": spec.semantic,
    }
