"""The two halves of a two-tower score, as the cache and the service need them.

Why a module of its own: the cache stores title encodings and the service combines them with a
query encoding later, so both must encode exactly as ``DefectClassifier.predict_proba`` does
(normalised text, the model's own tokenizer and padding lengths, eval mode) or the service's
scores drift from the model's. What the title side keeps is what ``DefectNet.score`` reads:
the pooled vector always, the token states and mask only when the model has matching. Scores
go through the model's own calibration (``clf.calibrator_``), exactly as in predict_proba.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from ..data import normalize_text
from ..model.bert import frozen_states_memoised
from ..model.classifier import Encoded
from ..data.tokenizer import trim_padding


class TitleArrays(NamedTuple):
    """Title-side encodings of N products: vector (N, C); tokens (N, T, C) and mask (N, T) or None."""

    vector: np.ndarray
    tokens: np.ndarray | None
    mask: np.ndarray | None


def needs_tokens(clf) -> bool:
    """Whether the model's score reads title token states (matching and co-attention do)."""
    return bool(clf.model_.needs_title_tokens)


@torch.inference_mode()
def encode_titles(clf, titles: Sequence[str], normalized: bool = False) -> TitleArrays:
    """Title encodings of one batch of titles, as float32 / bool numpy arrays."""
    texts = list(titles) if normalized else [normalize_text(t) for t in titles]
    ids = torch.from_numpy(clf.tokenizer_.encode(texts, clf.model_config_.title_max_len))
    enc = clf.model_.encode_title(ids.to(_device(clf)))
    vector = enc.vector.float().cpu().numpy()  # (N, C)
    if not needs_tokens(clf):
        return TitleArrays(vector, None, None)
    return TitleArrays(vector, enc.tokens.float().cpu().numpy(), enc.mask.cpu().numpy())  # (N, T, C), (N, T)


@torch.inference_mode()
def encode_query(clf, query: str) -> Encoded:
    """The encoding of one (normalised) query: tokens (1, Tq, C), vector (1, C), mask (1, Tq)."""
    ids = trim_padding(clf.tokenizer_.encode([query], clf.model_config_.query_max_len))  # no padding: it is masked anyway
    return clf.model_.encode_query(torch.from_numpy(ids).to(_device(clf)))


def float32_tensor(array: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """A float32 tensor of ``array`` on ``device``: cached encodings may be stored as float16, but
    scores are always computed in float32 (widened by torch: ~10× faster than numpy's float16 cast)."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=torch.float32)


def used_columns(mask: np.ndarray) -> int:
    """Token positions (≥ 1) up to the last one any row of ``mask`` (n, T) uses: the columns after
    it are padding in every row, so dropping them leaves a masked score exactly as it was."""
    return int(np.flatnonzero(np.asarray(mask).any(0)).max(initial=0)) + 1


def title_encoded(titles: TitleArrays, device: torch.device | str, tokens: bool) -> Encoded:
    """The title side of a score on ``device``, in float32 (a cache may store float16 or int8):
    the vectors, and with ``tokens`` (matching) the token states and mask without the padding
    columns no title uses (:func:`used_columns`)."""
    vector = float32_tensor(titles.vector, device)  # (n, V)
    if not tokens:
        return Encoded(None, vector, None)  # score() reads title tokens only for matching
    mask = np.asarray(titles.mask, dtype=bool)
    T = used_columns(mask)
    return Encoded(float32_tensor(titles.tokens[:, :T], device), vector, torch.from_numpy(np.ascontiguousarray(mask[:, :T])).to(device))


def float32_array(array: np.ndarray) -> np.ndarray:
    """``array`` as a C-contiguous float32 numpy array (what onnxruntime takes), widened by torch
    when it is float16 (numpy's float16 cast is ~10× slower: ~0.5 ms of a 100-product request)."""
    if array.dtype == np.float32:
        return np.ascontiguousarray(array)
    return float32_tensor(array).numpy()


@torch.inference_mode()
def encode_queries(clf, queries: Sequence[str]) -> list[Encoded]:
    """Encodings of several (normalised) queries in one padded pass, each shaped as :func:`encode_query`
    gives it alone — tokens (1, Tq_i, C), vector (1, V), mask (1, Tq_i) — and equal to it up to float
    rounding (padding is masked)."""
    ids, lengths = padded_query_ids(clf.tokenizer_, queries, clf.model_config_.query_max_len)
    enc = clf.model_.encode_query(torch.from_numpy(ids).to(_device(clf)))
    return [Encoded(*parts) for parts in split_query_batch(enc.tokens, enc.vector, enc.mask, lengths, torch.clone)]


def padded_query_ids(tokenizer, queries: Sequence[str], max_len: int) -> tuple[np.ndarray, list[int]]:
    """(ids (Q, L) right-padded to the longest query, each query's token count ≥ 1): one padded
    pass of the query tower for several queries (micro-batching, :mod:`.batching`)."""
    ids = tokenizer.encode(list(queries), max_len)
    return trim_padding(ids), np.maximum((ids != 0).sum(axis=1), 1).tolist()


def split_query_batch(tokens, vector, mask, lengths: list[int], copy) -> list[tuple]:
    """Each query's rows of a padded pass (:func:`padded_query_ids`) as that query alone gives them —
    (tokens (1, Tq_i, C), vector (1, V), mask (1, Tq_i)) — its padding columns dropped, each part
    copied with ``copy`` (``torch.clone`` or ``np.copy``) so no request holds the batch's memory."""
    return [(copy(tokens[i : i + 1, :n]), copy(vector[i : i + 1]), copy(mask[i : i + 1, :n])) for i, n in enumerate(lengths)]


@torch.inference_mode()
def score(clf, query: Encoded, titles: TitleArrays, batch_size: int = 1024) -> np.ndarray:
    """Defect probabilities (N,) float64 of one query against N title encodings (float16 or
    float32; computed in float32), batched."""
    device = _device(clf)
    out = []
    for i in range(0, len(titles.vector), batch_size):
        t = title_encoded(TitleArrays(*(None if a is None else a[i : i + batch_size] for a in titles)), device, needs_tokens(clf))
        out.append(clf.model_.score_one_query(query, t).double().cpu())  # the query's part computed once
    logits = torch.cat(out).numpy() if out else np.zeros(0)
    return clf.calibrator_.transform_logits(logits)  # as predict_proba: the model's calibration, float64


def _device(clf) -> torch.device:
    return torch.device(clf.train_config_.device)  # where DefectClassifier.load(device=...) put the model


def request_latency_ms(clf, queries: Sequence[str], titles: Sequence[str], repeats: int, threads: int | None = None,
                       warmup: int = 2) -> float:
    """Median milliseconds of one request as ``serve`` answers it from a product cache: encode a
    (normalised) query, score ``titles`` from their pre-encoded arrays (what ``defectnas cache``
    stores). Successive timed requests cycle through ``queries``. The one timer of served latency
    for ``compare``, the search's children and the benchmarks."""
    from ..timing import median_ms

    with frozen_states_memoised(clf.model_):  # the product side is cached, not timed: a search's children
        arrays = encode_titles(clf, titles)  # reuse the frozen states their training computed for these titles
    queries = list(queries) or ["query"]
    turn = iter(range(1 << 62))
    return median_ms(lambda: score(clf, encode_query(clf, queries[next(turn) % len(queries)]), arrays), repeats, threads,
                     warmup=warmup)
