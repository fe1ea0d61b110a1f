"""All tunables in one place.

Every field can be set from the environment with the ``HIBT_`` prefix (for example
``HIBT_MAX_UPLOAD_BYTES=5000000``); CLI flags override both. The defaults work on a
laptop and on this project's 2-core CI machine.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
TINY_MODEL = "tiny-test"
RANDOM_WEIGHTS = "random-init"  # a pretrained tag for benchmarks: the architecture, untrained


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIBT_", protected_namespaces=())

    # --- embedding model -------------------------------------------------------------
    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    checkpoint: str | None = None
    # auto, fp32, bf16 or int8; "auto" is bf16 where the CPU has native bf16 units (AMX or
    # AVX512-BF16), else int8 dynamic quantisation where torch has a quantised CPU engine,
    # else fp32 (indexer/precision.py).
    precision: str = "auto"

    # --- reading images ----------------------------------------------------------------
    max_image_pixels: int = 250_000_000  # larger dataset images are skipped as possible bombs
    max_image_bytes: int = 200_000_000
    # Decoded images are shrunk to this longest side before any further work.
    working_size: int = 1024
    thumbnail_size: int = 256

    # --- building ------------------------------------------------------------------------
    batch_size: int = 64
    chunk_size: int = 512  # records per resumable unit of work
    decode_workers: int = 0  # 0: chosen from the CPU count
    faiss_factory: str | None = None  # None: chosen from the number of vectors
    # Compressed (IVF-PQ) indexes: inverted lists searched per query, and how many of their
    # best candidates are re-scored exactly from the float16 vectors (docs/scale.md). nprobe
    # None: a fixed share of the lists, so recall holds as the index grows.
    nprobe: int | None = None
    rerank: int = 500

    # --- copy detection -------------------------------------------------------------------
    # Cosines of DCT descriptors (indexer/copies/fingerprint.py). How each threshold was
    # calibrated, with the figures and commands: docs/copy-detection.md.
    exact_copy_min_similarity: float = 0.99
    near_copy_min_similarity: float = 0.98
    # Below the near-copy threshold, items at least this similar are shown first among the
    # similar results, with their similarity; they are never labelled copies.
    lookalike_min_similarity: float = 0.90
    duplicate_group_min_similarity: float = 0.97
    duplicate_group_max_colour: float = 12.0  # mean abs difference of 4x4 colour signatures
    exact_copy_max_colour: float = 12.0
    # An upload cut out of what looked like window chrome is also compared uncut, and may
    # then claim a stored crop only from this similarity up.
    uncut_copy_min_similarity: float = 0.995
    # Copy candidates verified region by region (indexer/copies/verify.py), best first; the
    # rest are shown as look-alikes, never counted as copies (a few ms each).
    copy_verify_limit: int = 16
    # Items known only by URL and embedding (published embeddings) have no fingerprint: an
    # upload is called a likely copy of one from this CLIP image-embedding cosine up. Not
    # calibrated here (no real weights can be loaded); clip-retrieval deduplicates at 0.94.
    likely_copy_min_similarity: float = 0.95

    # --- serving -------------------------------------------------------------------------
    max_upload_bytes: int = 20_000_000
    max_upload_pixels: int = 50_000_000
    max_k: int = 1000
    default_k: int = 60
    max_query_chars: int = 500
    # Counts of name and site matches stop here, and are then reported as at least this many:
    # an exact count of a common word over 10 million captions costs a scan.
    max_count: int = 10_000

    # --- opt-out registry ----------------------------------------------------------------
    registry: str | None = None  # None: INDEX_DIR.optouts.sqlite beside the index directory
    hide_opted_out: bool = False  # hide opted-out items from results instead of marking them
    # A file of items removed from the dataset since it was indexed (one id, URL, sha256 or
    # md5 a line, as Re-LAION's removal lists give them): hidden from every answer.
    removed: str | None = None
    max_optout_items: int = 1000  # per request
    writes_per_minute: int = 30  # per client address, on the registry's write endpoints
    verify_allow_private: bool = False  # let domain checks fetch from private addresses
    # The Do-Not-Train query API (POST /api/v2/query/urls/, as datadiligence's SpawningAPI
    # rule calls it): when set, callers must send "Authorization: API <this key>".
    do_not_train_key: str | None = None

    # --- clip-retrieval compatibility (POST /knn-service) --------------------------------
    # Let clients send an image_url for the server to fetch. Off by default: the server would
    # fetch any address a client names. When on, private and loopback addresses, redirects
    # to them and bodies over max_upload_bytes are refused, as for a domain proof.
    clip_fetch_image_urls: bool = False
    clip_fetch_private: bool = False  # and from private addresses too (tests, an intranet)
    # num_images and num_result_ids at most (the clip-retrieval front-end asks 3,000 ids,
    # and 10,000 results for its download button).
    clip_max_results: int = 10_000


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
