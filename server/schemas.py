"""The JSON API's shapes; FastAPI turns them into the OpenAPI document at /docs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MatchKind = Literal[
    "exact_copy", "near_copy", "edited_copy", "likely_copy", "name_match", "site_match", "similar"
]


class ModelSummary(BaseModel):
    name: str
    pretrained: str | None
    dim: int
    semantic: bool = Field(
        description="False for the built-in test model: its similarity scores mean nothing"
    )


class Result(BaseModel):
    id: str
    match: MatchKind = Field(description="Why this item is in the answer; best kinds first")
    score: float | None = Field(
        description="CLIP cosine similarity between the query and the image (none for site queries)"
    )
    copy_similarity: float | None = Field(
        None,
        description="Cosine of the perceptual (DCT) fingerprints of the query and this image, "
        "best over flips, crops and turns; the copy labels are thresholds on it (copies only)",
    )
    hash_distance: int | None = Field(
        None,
        description="Bits differing between the 256-bit pHashes of the best-matching views "
        "(copies only; 0-256; absent for near-blank images matched by colour)",
    )
    edited_region: str | None = Field(
        None,
        description="For an edited copy: where the upload differs from this image (a caption "
        "or logo laid over it), such as 'bottom right'",
    )
    matched_fields: list[str] = Field(default_factory=list)
    caption: str
    title: str
    artist: str
    license: str
    source: str
    url: str
    width: int
    height: int
    duplicates: int = Field(description="Near-identical images in the dataset, this one included")
    thumbnail_url: str | None = Field(
        description="The server's thumbnail, or for an item known only by URL its source URL "
        "(the server fetches nothing; the link may be dead). For an unsafe item in safe mode: "
        "the server's blurred thumbnail, or none for an item known only by URL"
    )
    image_url: str | None = Field(
        description="The original (or the source URL); none for an unsafe item in safe mode"
    )
    url_only: bool = Field(
        False, description="Known by URL and embedding only: no copy fingerprint, no thumbnail"
    )
    unsafe: bool = Field(
        False,
        description="Flagged as possibly explicit: its safety score is at or above the "
        "server's threshold. Still listed and counted, and can be opted out",
    )
    nsfw_score: float | None = Field(
        None, description="P(explicit) from 0 to 1; none when the item was not scored"
    )
    nsfw_source: str | None = Field(
        None,
        description="Who scored it: open_nsfw (the classifier, at build time), laion:punsafe "
        "or laion:NSFW (the published columns)",
    )
    extra: dict = Field(
        default_factory=dict,
        description="Published columns kept as they were (similarity, NSFW, punsafe, "
        "pwatermark, md5, the dataset's own key)",
    )
    vector: list[float] | None = None
    opt_out: Literal["unverified", "verified", "pending"] | None = Field(
        None,
        description="Opt-out status: unverified claim, verified domain, or domain claim "
        "pending verification",
    )


class MatchCounts(BaseModel):
    exact_copy: int = 0
    near_copy: int = 0
    edited_copy: int = Field(0, description="Copies with a part changed (an overlay, a logo)")
    copy_pictures: int = Field(
        0,
        description="Distinct pictures among the copies: duplicate groups, each counted once "
        "however many files it holds",
    )
    undecided_files: int = Field(
        0,
        description="Files the upload passed verification against that differ from each other "
        "by less than it differs from them: no copy is claimed, they are shown as similar",
    )
    likely_copy: int = Field(0, description="Items known by URL whose image embedding is close")
    name_match: int = 0
    name_match_capped: bool = Field(
        False, description="The name matches were counted up to the limit: there are at least"
    )
    site_match: int = 0
    site_match_capped: bool = False


class SiteCount(BaseModel):
    site: str
    count: int


class SearchResponse(BaseModel):
    query: str
    query_type: Literal["text", "image", "vector", "site"]
    model: ModelSummary
    total_items: int
    counts: MatchCounts
    copy_verdict: str | None = Field(
        None, description="For image queries: whether a copy of the image is in the dataset"
    )
    offset: int
    k: int
    next_offset: int | None
    results: list[Result]
    sites: list[SiteCount] = Field(
        default_factory=list,
        description="Text queries: the hosts most name matches come from, with their counts",
    )
    safe: bool = Field(
        True,
        description="Safe mode was on: unsafe items' pictures are blurred or withheld "
        "(turn it off with safe=false)",
    )
    unsafe_results: int = Field(0, description="How many of these results are flagged unsafe")
    took_ms: float


class VectorQuery(BaseModel):
    vector: list[float] = Field(description="A query embedding of the index's dimension")
    k: int = Field(60, ge=1)
    offset: int = Field(0, ge=0)
    target: Literal["images", "captions"] = "images"
    return_vectors: bool = False
    safe: bool = Field(True, description="Safe mode (see /api/search)")


class BatchTextQuery(BaseModel):
    queries: list[str] = Field(min_length=1, max_length=64)
    k: int = Field(10, ge=1)
    safe: bool = Field(True, description="Safe mode (see /api/search)")


class BatchResponse(BaseModel):
    responses: list[SearchResponse]


class ItemDetail(Result):
    key: str
    sha256: str
    keywords: str
    duplicate_ids: list[str]


class Stats(BaseModel):
    dataset: str
    items: int
    skipped: int
    with_caption: int
    duplicate_groups: int
    largest_duplicate_groups: list[dict]
    model: ModelSummary
    faiss_factory: str
    fingerprint: str
    built_at: str
    format_version: int
    safety: str = Field(description="What was scored for explicit content, and what is done")
    safety_scored: int = Field(0, description="Items with a safety score; 0: none scored")
    unsafe_threshold: float
    hide_unsafe: bool = Field(False, description="Flagged items are hidden from every answer")


class Health(BaseModel):
    status: Literal["ok"]
    items: int


class ErrorBody(BaseModel):
    detail: str


class OptOutRequest(BaseModel):
    item_ids: list[str] = Field(min_length=1, description="ids of the items to opt out")
    name: str = Field("", max_length=200)
    contact: str = Field("", max_length=200)
    note: str = Field("", max_length=2000)
    index: str | None = Field(
        None, description="The index the items are in (/api/indices); the first by default"
    )


class OptOutReceipt(BaseModel):
    receipt: str
    token: str = Field(description="Shown once; keep it to view or withdraw these opt-outs")
    manage_url: str
    added: list[str] = Field(description="Items this request opted out that were not before")
    already: list[str] = Field(
        description="Items already opted out by an earlier claim. This claim on them is "
        "recorded too (it is listed under this receipt), so they stay opted out while any "
        "claim on them stands, whoever withdraws"
    )
    status: Literal["unverified"] = "unverified"


class WithdrawRequest(BaseModel):
    item_ids: list[str] | None = Field(None, description="None withdraws everything")


class DomainClaimRequest(BaseModel):
    domain: str = Field(min_length=1, max_length=300)
    name: str = Field("", max_length=200)
    contact: str = Field("", max_length=200)


class DomainClaim(BaseModel):
    receipt: str
    token: str
    domain: str
    challenge: str
    status: Literal["pending"] = "pending"
    expires_at: str = Field(
        description="Unless verified by then (UTC, ISO 8601) the claim lapses; others may "
        "claim the domain meanwhile, and the first claim verified wins"
    )
    instructions: str


class DomainVerifyRequest(BaseModel):
    receipt: str


class CheckRequest(BaseModel):
    urls: list[str] = Field(default_factory=list, max_length=10000)
    sha256: list[str] = Field(default_factory=list, max_length=10000)
    ids: list[str] = Field(default_factory=list, max_length=10000)
    include_pending: bool = Field(
        False,
        description="Also report URLs covered only by a domain claim still pending "
        "verification (status 'pending': anyone can make one, it proves nothing)",
    )


class CheckHit(BaseModel):
    query: str
    by: Literal["id", "url", "domain", "sha256"]
    status: str


class CheckResponse(BaseModel):
    opted_out: list[CheckHit]


class DomainVerified(BaseModel):
    domain: str
    status: Literal["verified"] = "verified"
    how: str | None = Field(
        None, description="How control was shown: 'file' (well-known file) or 'dns'"
    )


class ClaimedItem(BaseModel):
    item_id: str
    source: str
    url: str
    status: str
    created_at: str
    withdrawn_at: str | None


class ClaimedDomain(BaseModel):
    domain: str
    status: str
    challenge: str
    created_at: str
    verified_at: str | None
    withdrawn_at: str | None
    expires_at: str | None = Field(
        None, description="When a pending claim lapses unless verified (UTC, ISO 8601)"
    )


class OptOutView(BaseModel):
    receipt: str
    name: str
    contact: str
    note: str
    created_at: str
    items: list[ClaimedItem]
    domains: list[ClaimedDomain]


class Withdrawn(BaseModel):
    items: list[str] = Field(description="Item ids withdrawn by this request")
    domains: list[str] = Field(description="Domain claims withdrawn by this request")


class IndexInfo(BaseModel):
    name: str = Field(description="What the index= parameter takes")
    dataset: str
    kind: Literal["images", "embeddings"] = Field(
        description="images: built from image files (copies found by fingerprint); "
        "embeddings: published URLs and embeddings (likely copies by CLIP embedding)"
    )
    items: int
    model: ModelSummary
    default: bool = Field(description="Searched when a request names no index")


class IndicesResponse(BaseModel):
    indices: list[IndexInfo]


class IndexAnswer(BaseModel):
    index: str
    found_copy: bool = Field(
        description="Image queries: this dataset holds an exact, near or likely copy"
    )
    response: SearchResponse


class MultiSearchResponse(BaseModel):
    query: str
    query_type: Literal["text", "image"]
    summary: str = Field(
        description="Where the work was found, e.g. 'exact copy in 2 of 3 datasets'"
    )
    found_in: list[str] = Field(
        description="Image queries: the indexes holding a copy; text: those naming the query"
    )
    answers: list[IndexAnswer]
    took_ms: float
