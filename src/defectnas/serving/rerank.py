"""``POST /v1/rerank``: the service in the shape rerank clients already send (Cohere v1/v2, Jina).

Why a second route: search stacks call rerankers with ``{"query", "documents", "top_n"}`` and
read ``results: [{index, relevance_score}]`` sorted by relevance; answering in that shape lets
those clients use this model unchanged. A document is a raw title (a string, or ``{"text": ...}``
as Cohere and Jina also accept) or a cached product (``{"id": ...}``); both kinds may be mixed
in one request. ``relevance_score`` is the model's calibrated probability that the product is
*not* a defect for the query (1 − ``defect_probability`` of ``/score``), so the order is the
model's and the numbers mean the same as ``/score``'s. Bounds and error lines are ``/score``'s:
413 too many documents, 422 an invalid body or text, 404 unknown ids (named). A client's
``model`` field is accepted and ignored (the served model answers and is named in the response),
as are Cohere's truncation and chunking hints (``max_tokens_per_doc``, ``max_chunks_per_doc``: a
title is one chunk, cut at the model's title length). Other fields are refused by name, since
ignoring them could change what the client meant (``rank_fields`` selects parts of structured
documents, which this route does not take). Text Embeddings Inference's ``/rerank`` is another
shape (``texts``, a bare list back) and is not served.
"""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from .app import AnswerJSON, JsonInt, ProductId, _check_locale, _check_query, _check_short, _check_texts, score_items


class IdDocument(BaseModel):
    """A cached product, by its id."""

    model_config = ConfigDict(extra="forbid")
    id: ProductId = Field(description="id of a product in the cache")


class TextDocument(BaseModel):
    """A raw product title, encoded on the fly (Cohere's and Jina's object form of a string document)."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr = Field(description="the product title")


class RerankRequest(BaseModel):
    """One query and the documents (product titles or cached product ids) to order by relevance."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "cordless drill", "documents": ["DeWalt 20V cordless drill", "Garden hose 50 ft"], "top_n": 1},
        {"query": "cordless drill", "documents": [{"id": "100001"}, {"id": "100002"}], "return_documents": True},
    ]})
    query: StrictStr = Field(description="the search query")
    documents: list[StrictStr | IdDocument | TextDocument] = Field(
        description="raw titles (strings or {\"text\": ...}) and/or cached products ({\"id\": ...}), in any mix")
    top_n: JsonInt | None = Field(None, description="return only the n most relevant (default: all)")
    return_documents: StrictBool = Field(False, description="echo each document ({\"text\"} or {\"id\"}) in its result")
    locale: StrictStr | None = Field(None, description="the products' locale, for ids of a cache keyed by locale (as in /score)")
    model: StrictStr | None = Field(None, description="accepted for rerank-client compatibility and ignored: the served model answers")
    max_tokens_per_doc: JsonInt | None = Field(None, description="Cohere v2's truncation hint, accepted and ignored: a title is always "
                                               "cut at the model's own title length in word pieces")
    max_chunks_per_doc: JsonInt | None = Field(None, description="Cohere v1's chunking hint, accepted and ignored: a title is one chunk")


class RerankResult(BaseModel):
    index: int = Field(description="position of the document in the request")
    relevance_score: float = Field(description="probability the product is not a defect for the query (1 - defect_probability)")
    document: dict | None = Field(None, description="the document, when return_documents: {\"text\": title} or {\"id\": id}")


class RerankResponse(BaseModel):
    model: str = Field(description="model directory name @ first 12 hex digits of its sha256")
    results: list[RerankResult] = Field(description="most relevant first (ties in request order), at most top_n")


def add_rerank_route(app: FastAPI, scorer, settings, title_limiter, dependencies: list, responses: dict) -> None:
    """Register ``POST /v1/rerank`` on ``app`` (the scorer, bounds and key check of ``/score``)."""
    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=responses,
              dependencies=dependencies, summary="order documents (titles or cached ids) by relevance to the query")
    async def rerank(request: RerankRequest) -> AnswerJSON:
        query = request.query
        titles, ids = _check(request, settings)  # {position: title}, {position: id}
        _check_texts(scorer, query, "title", [])
        for position, problem in zip(titles, scorer.text_problems(list(titles.values()))):
            if problem:
                raise HTTPException(422, f"documents[{position}]: {problem} once normalised and tokenised (nothing the model can score)")
        _check_locale(scorer, request.locale, by_ids=bool(ids))
        defect = np.empty(len(request.documents), dtype=np.float64)
        if ids:
            defect[list(ids)] = await score_items(scorer, query, "product_id", list(ids.values()), request.locale, title_limiter,
                                                  app.state.batcher)
        if titles:
            defect[list(titles)] = await score_items(scorer, query, "title", list(titles.values()), None, title_limiter)
        relevance = 1.0 - defect
        order = np.argsort(-relevance, kind="stable")[: request.top_n]  # most relevant first, ties in request order
        results = []
        for i in order.tolist():
            result = {"index": i, "relevance_score": float(relevance[i])}
            if request.return_documents:
                result["document"] = {"id": ids[i]} if i in ids else {"text": titles[i]}
            results.append(result)
        return AnswerJSON({"model": scorer.name, "results": results})  # already valid: skip re-validation


def _check(request: RerankRequest, s) -> tuple[dict[int, str], dict[int, str]]:
    """The titles and the ids by position in ``documents``, or an HTTPException with the reason."""
    docs = request.documents
    if len(docs) > s.max_products:
        raise HTTPException(413, f"too many documents: {len(docs)} > {s.max_products} per request")
    if not docs:
        raise HTTPException(422, "documents is empty")
    if request.top_n is not None and request.top_n < 1:
        raise HTTPException(422, f"top_n must be at least 1, got {request.top_n}")
    _check_query(request.query, s)
    _check_short("locale", request.locale, s)
    _check_short("model", request.model, s)
    titles, ids = {}, {}
    for i, doc in enumerate(docs):
        if isinstance(doc, IdDocument):
            text, limit, kind, into = str(doc.id), s.max_id_chars, "id", ids
        else:
            text, limit, kind, into = doc if isinstance(doc, str) else doc.text, s.max_title_chars, "title", titles
        if not text.strip():
            raise HTTPException(422, f"documents[{i}] is empty")
        if len(text) > limit:
            raise HTTPException(422, f"documents[{i}] too long: {len(text)} > {limit} characters (a {kind})")
        into[i] = text
    return titles, ids
