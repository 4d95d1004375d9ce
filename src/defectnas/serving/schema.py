"""The published OpenAPI schema says what the server does (checked by schemathesis in the tests).

Why not just FastAPI's generated schema: the request models are lenient on purpose (so that a
wrong body gets *our* one-line reason and status, e.g. 413 for too many products), which makes
the generated schema promise more than the server accepts. Here the schema is tightened to the
rules the server enforces: ``/score`` takes exactly one of ``product_ids`` and ``titles``
(``oneOf`` of ``ScoreByIds`` and ``ScoreByTitles``), texts are non-blank and within the
character bounds (``locale`` and rerank's ``model`` within the id bound), lists within the
product bound, ``locale`` only where the cache is keyed by locale; and every status the server sends is listed with its body and headers (401 only with an
API key; 503 with ``Retry-After``). What a schema cannot say is documented in words: a text
whose words the model does not know at all is 422 (it depends on the model's vocabulary).
"""

from __future__ import annotations

import copy

from fastapi import FastAPI

# a text with a character Python's str.strip() keeps (the server strips before judging); written out, because
# the schema's \S (ECMA-262) and Python differ on U+001C-U+001F, U+0085 and U+FEFF
NOT_BLANK = "[^\\t\\n\\u000b\\u000c\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
UNREADABLE = ("A text the model sees nothing in once normalised and tokenised (only unknown word pieces, or nothing) is 422 "
              "too: that depends on the model's vocabulary, which no schema can state.")


def install(app: FastAPI, settings, scorer) -> None:
    """Replace ``app.openapi`` with one that returns the tightened schema (built once)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = tighten(generate(), settings, has_locales=scorer.cache is not None and scorer.cache.locales is not None,
                                         with_key=bool(settings.api_key))
        return app.openapi_schema

    app.openapi = openapi


def tighten(schema: dict, s, *, has_locales: bool, with_key: bool) -> dict:
    """The generated ``schema`` with the server's rules (see the module docstring)."""
    schema = copy.deepcopy(schema)
    components = schema["components"]["schemas"]
    text = lambda limit, what: {"type": "string", "minLength": 1, "maxLength": limit, "pattern": NOT_BLANK, "description": what}  # noqa: E731
    query = text(s.max_query_chars, "the search query (not blank)")
    product_id = {"anyOf": [text(s.max_id_chars, "a cached product's id"),
                            {"type": "integer", "minimum": -(10 ** (s.max_id_chars - 1) - 1), "maximum": 10 ** s.max_id_chars - 1}]}
    title = text(s.max_title_chars, "a raw product title")
    short = {"type": "string", "maxLength": s.max_id_chars}  # locale, rerank's model: bounded, so the body cap covers them
    locale = ({"anyOf": [short, {"type": "null"}], "description": components["ScoreRequest"]["properties"]["locale"]["description"]}
              if has_locales else {"type": "null", "description": "this cache is not keyed by locale: no locale"})
    listed = lambda items, what: {"type": "array", "items": items, "minItems": 1, "maxItems": s.max_products,  # noqa: E731
                                  "description": f"{what} (1 to {s.max_products}; more: 413)"}
    request = components.pop("ScoreRequest")
    components["ScoreByIds"] = {
        "title": "ScoreByIds", "type": "object", "additionalProperties": False, "required": ["query", "product_ids"],
        "description": "One query and cached products, by id (unknown ids: 404).",
        "properties": {"query": query, "product_ids": listed(product_id, "ids of cached products"), "locale": locale,
                       "titles": {"type": "null", "description": "not with product_ids"}},
        "examples": [request["examples"][0]]}
    components["ScoreByTitles"] = {
        "title": "ScoreByTitles", "type": "object", "additionalProperties": False, "required": ["query", "titles"],
        "description": "One query and raw product titles, encoded on the fly.",
        "properties": {"query": query, "titles": listed(title, "raw product titles"),
                       "product_ids": {"type": "null", "description": "not with titles"}, "locale": {"type": "null", "description": "ids only"}},
        "examples": [request["examples"][1]]}
    score = schema["paths"]["/score"]["post"]
    score["requestBody"]["content"]["application/json"]["schema"] = {
        "oneOf": [{"$ref": "#/components/schemas/ScoreByIds"}, {"$ref": "#/components/schemas/ScoreByTitles"}],
        "description": "exactly one of product_ids (cached products) and titles (raw titles)"}

    rerank = components["RerankRequest"]["properties"]
    rerank["query"] = query
    rerank["documents"] = listed({"anyOf": [title, {"$ref": "#/components/schemas/IdDocument"}, {"$ref": "#/components/schemas/TextDocument"}]},
                                 rerank["documents"]["description"])
    rerank["locale"] = locale
    rerank["model"]["anyOf"][0] = short
    rerank["top_n"]["anyOf"][0] = {"type": "integer", "minimum": 1}
    components["IdDocument"]["properties"]["id"] = product_id
    components["TextDocument"]["properties"]["text"] = title

    for path in ("/score", "/v1/rerank"):
        operation = schema["paths"][path]["post"]
        operation["description"] = (operation.get("description", "") + "\n\n" + UNREADABLE).strip()
        responses = operation["responses"]
        responses.pop("401", None) if not with_key else None
        descriptions = {"401": "missing or wrong API key", "404": "unknown product ids (named)",
                        "413": f"too many products (over {s.max_products}) or a body over {s.body_limit()} bytes",
                        "422": "invalid body: not JSON, not this schema, or a text the model cannot read (one line)"}
        for code, what in descriptions.items():
            if code in responses:
                responses[code]["description"] = what
        responses["503"] = {"description": "overloaded (every slot and the queue taken) or past the request deadline; retry later",
                            "headers": {"Retry-After": {"required": True, "description": "seconds to wait", "schema": {"type": "integer"}}},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    return schema
