"""The Do-Not-Train query API, as Spawning's service answers it and datadiligence asks it.

``POST /api/v2/query/urls/`` takes a ``text/plain`` body of newline-separated URLs (at most
10,000, the chunk size datadiligence's ``SpawningAPI`` rule sends) and answers
``{"urls": [{"url": ..., "optOut": true|false}, ...]}`` in request order. A URL is opted out
when an item opt-out names it or a verified domain claim covers its host (pending claims
prove nothing, so they do not count). The lookups are the registry's batched, indexed check
(optouts.OptOuts.check), so a call costs the same against a registry of any size.

A dataset builder points the rule at a self-hosted server::

    SpawningAPI.SPAWNING_AI_API_URL = "http://localhost:8000/api/v2/query/urls/"
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from hibt.config import Settings
from hibt.errors import QueryError, RegistryError
from hibt.server import schemas
from hibt.server.optouts import OptOuts

PATH = "/api/v2/query/urls/"
MAX_URLS = 10_000  # datadiligence's SpawningAPI.MAX_CHUNK_SIZE
MAX_URL_CHARS = 8192


class UrlOptOut(BaseModel):
    url: str
    optOut: bool = Field(  # the protocol's name
        description="An item opt-out names this URL, or a verified domain claim covers its host"
    )


class UrlsAnswer(BaseModel):
    urls: list[UrlOptOut] = Field(description="One entry per URL sent, in the same order")


EXAMPLE_BODY = "https://example.com/art/fox.png\nhttps://janedoe.art/portfolio/owl.jpg\n"
EXAMPLE_ANSWER = {
    "urls": [
        {"url": "https://example.com/art/fox.png", "optOut": False},
        {"url": "https://janedoe.art/portfolio/owl.jpg", "optOut": True},
    ]
}


def parse_urls(body: bytes) -> list[str]:
    """One URL a line (``\\n`` or ``\\r\\n``); a final newline ends the last line rather than
    adding an empty one. Blank lines inside are kept, so answers line up with the request."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise QueryError("the body must be UTF-8 text: one URL a line", 400) from None
    if text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise QueryError("the body is empty: send one URL a line", 400)
    urls = [line.rstrip("\r").strip() for line in text.split("\n")]
    if len(urls) > MAX_URLS:
        raise QueryError(f"at most {MAX_URLS} URLs per request; {len(urls)} were sent", 413)
    long = next((i for i, u in enumerate(urls) if len(u) > MAX_URL_CHARS), None)
    if long is not None:
        raise QueryError(f"URL on line {long + 1} is longer than {MAX_URL_CHARS} characters", 400)
    return urls


def check_key(authorization: str, key: str | None) -> None:
    """When the operator set a key, the caller must send it as ``Authorization: API <key>``."""
    if not key:
        return
    scheme, _, sent = authorization.partition(" ")
    if scheme != "API" or not hmac.compare_digest(sent.strip().encode(), key.encode()):
        raise RegistryError("this server needs its key: send 'Authorization: API <key>'", 401)


def answer(optouts: OptOuts, urls: list[str]) -> UrlsAnswer:
    hits = optouts.check(schemas.CheckRequest(urls=[u for u in urls if u]))
    opted = {hit.query for hit in hits.opted_out}
    return UrlsAnswer(urls=[UrlOptOut(url=u, optOut=u in opted) for u in urls])


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (chunked bodies declare none)."""
    body = bytearray()
    async for block in request.stream():
        body += block
        if len(body) > limit:
            raise QueryError(f"the body is larger than the limit of {limit} bytes", 413)
    return bytes(body)


def router(optouts: OptOuts, settings: Settings) -> APIRouter:
    api = APIRouter(tags=["Do-Not-Train"])
    limit = min(settings.max_upload_bytes, MAX_URLS * (MAX_URL_CHARS + 2))

    @api.post(
        PATH,
        response_model=UrlsAnswer,
        responses={
            200: {"content": {"application/json": {"example": EXAMPLE_ANSWER}}},
            400: {"model": schemas.ErrorBody},
            401: {"model": schemas.ErrorBody},
            413: {"model": schemas.ErrorBody},
            415: {"model": schemas.ErrorBody},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/plain": {
                        "schema": {"type": "string"},
                        "example": EXAMPLE_BODY,
                    }
                },
            }
        },
    )
    async def query_urls(
        request: Request, authorization: Annotated[str, Header()] = ""
    ) -> UrlsAnswer:
        """Which of these URLs are opted out of training (Spawning's Do-Not-Train query, as
        datadiligence's SpawningAPI rule sends it): up to 10,000 URLs, one a line, answered
        in order. Item opt-outs by URL and verified domain claims count; pending domain
        claims do not. With HIBT_DO_NOT_TRAIN_KEY set, send `Authorization: API <key>`."""
        check_key(authorization, settings.do_not_train_key)
        kind = request.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
        if kind and not kind.startswith("text/") and kind != "application/octet-stream":
            raise QueryError(f"send the URLs as text/plain, one a line (not {kind})", 415)
        urls = parse_urls(await read_capped(request, limit))
        return await run_in_threadpool(answer, optouts, urls)

    return api
