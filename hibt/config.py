"""All tunables in one place.

Every field can be set from the environment with the ``HIBT_`` prefix (for example
``HIBT_MAX_UPLOAD_BYTES=5000000``); CLI flags override both. The defaults work on a
laptop and on this project's 2-core CI machine.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
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
    # auto, torch or onnx: what runs the encoder. auto is ONNX Runtime (int8 when precision
    # is auto) wherever onnxruntime is installed and the model exports; it was 2-3x faster
    # than torch per query on x86 (docs/indexing.md). bf16 always runs in torch.
    runtime: str = "auto"
    # Where the exported ONNX graphs are kept, one folder per model's weights (None:
    # $XDG_CACHE_HOME/hibt/onnx, else ~/.cache/hibt/onnx).
    model_cache: str | None = None

    # --- reading images ----------------------------------------------------------------
    max_image_pixels: int = 250_000_000  # larger dataset images are skipped as possible bombs
    max_image_bytes: int = 200_000_000
    # Decoded images are shrunk to this longest side before any further work.
    working_size: int = 1024
    thumbnail_size: int = 256

    # --- building ------------------------------------------------------------------------
    batch_size: int = 64
    chunk_size: int = 512  # records per resumable unit of work
    decode_workers: int = 0  # 0: chosen from measured costs, at most one a core; -1: inline
    faiss_factory: str | None = None  # None: chosen from the number of vectors
    # Tests only: make a build fail at a named phase as a machine would, "PHASE" (killed
    # with SIGKILL) or "PHASE:enospc" (the disk is full there); indexer/faults.py.
    fault_at: str | None = None
    # Compressed (IVF-PQ) indexes: inverted lists searched per query, and how many of their
    # best candidates are re-scored exactly from the float16 vectors (docs/scale.md). nprobe
    # None: a fixed share of the lists, so recall holds as the index grows.
    nprobe: int | None = None
    rerank: int = 500

    # --- building on a Ray cluster (hibt index --ray; docs/distributed.md) ---------------
    # Where to find Ray: None is ray.init()'s own choice (RAY_ADDRESS, else a cluster
    # started on this machine with `ray start`, else a Ray instance of this process alone).
    ray_address: str | None = None
    # Where workers write their parts: a path every node sees, or an fsspec URL
    # (s3://bucket/prefix, gs://...). None: inside the staging directory (one machine only).
    ray_parts: str | None = None
    ray_embedders: int = 0  # embedding actors; 0: one per GPU, or one per 4 CPUs without GPUs
    ray_embed_cpus: float = 1.0  # CPUs each embedding actor holds (its threads on a CPU)
    # For tests of retries only: "decode:U,embed:U" makes that stage raise once on unit U,
    # "kill-decode:U,kill-embed:U" ends its worker process once.
    ray_fault: str = ""

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
    # Processes that verify a query's copy candidates beside its own thread (server/
    # verifiers.py; verification holds the GIL, so threads do not help). None: one fewer than
    # the usable CPUs, at most 3; 0: every candidate in the query's thread.
    copy_verify_processes: int | None = None
    # Items known only by URL and embedding (published embeddings) have no fingerprint: an
    # upload is called a likely copy of one from this CLIP image-embedding cosine up. Not
    # calibrated here (no real weights can be loaded); clip-retrieval deduplicates at 0.94.
    likely_copy_min_similarity: float = 0.95

    # --- safety (indexer/nsfw.py, server/safety.py, docs/safety.md) ------------------------
    # Score every image with local bytes with open_nsfw at build time (published embeddings
    # take LAION's punsafe/NSFW columns whatever this says).
    nsfw_scoring: bool = True
    # Items scoring this or more are flagged: blurred in safe mode, hidden with hide_unsafe.
    # 0.5 is the classifier package's default and clip-retrieval's for LAION's punsafe;
    # open_nsfw's authors call < 0.2 safe and > 0.8 explicit with high probability.
    unsafe_threshold: float = Field(0.5, gt=0.0, le=1.0)
    hide_unsafe: bool = False  # hide flagged items from every answer instead of blurring

    # --- serving -------------------------------------------------------------------------
    max_upload_bytes: int = 20_000_000
    max_upload_pixels: int = 50_000_000
    max_k: int = 1000
    default_k: int = 60
    max_query_chars: int = 500
    # Bodies are counted as they arrive, whatever Content-Length says (server/limits.py):
    # image uploads may be max_upload_bytes (plus the form's own bytes); any other body is
    # JSON and is refused past max_json_bytes (10,000 URLs to check fit in it).
    max_json_bytes: int = 4_000_000
    # Queries run at most this many at once (0: two per CPU this process may use); more wait
    # (at most max_queued_queries, each at most queue_wait_s) while the queue's expected wait
    # is within queue_target_s; past that a request is refused with 503 and Retry-After, so
    # latency stays bounded and throughput does not fall under overload (more queries at once
    # only fight over the GIL and the cores: docs/hardening.md has the figures).
    max_concurrent_queries: int = 0
    max_queued_queries: int = 64
    queue_wait_s: float = 30.0
    queue_target_s: float = 1.0
    # Full-size pixels that uploads being decoded may hold together (indexer/images.py's
    # MemoryBudget): a burst of small files that decode big waits its turn within it.
    decode_memory_bytes: int = 300_000_000
    # Counts of site and name matches stop here, and are then reported as at least this many:
    # an exact count of a common site or word over 10 million items costs a scan. A site is
    # counted along an index (cheap); a name is a phrase evaluated over each word's postings,
    # about 2 us a match, which every text query pays (docs/scale.md).
    max_count: int = 10_000
    max_name_count: int = 1_000

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
    # A domain check (DNS and the well-known file together) ends at this deadline, runs at
    # most max_concurrent_verifications at once beside the queries (never in their place),
    # and a claim may be checked at most verify_attempts_per_hour times.
    verify_deadline_s: float = 10.0
    max_concurrent_verifications: int = 4
    verify_attempts_per_hour: int = 12
    # Addresses tracked by the per-address write limit; the least recently seen are
    # forgotten first (each costs about 1 KB).
    rate_limit_max_clients: int = 10_000
    # Proxies whose X-Forwarded-For is believed (uvicorn's forwarded_allow_ips: a comma-
    # separated list of addresses or networks, or "*"). The client address the write limit
    # counts is then the one the proxy saw; from anyone else the header is ignored.
    trusted_proxies: str = "127.0.0.1"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
