"""``OnnxScorer``: the service's scorer on onnxruntime, from an ONNX export (``serve --backend onnx``).

Why a second scorer: the interface :mod:`.app` uses (``score_ids``, ``score_titles``,
``text_problems``, ``name``, ``threshold``, ``cache``, ``matching``, ``query_cache``) is the
same as :class:`~.scorer.Scorer`'s, so the service does not know which runtime it has; what
differs is that a request runs the exported graphs (see :mod:`.onnx_export`) with a fixed
number of onnxruntime threads instead of PyTorch modules. Texts are normalised and tokenised as
``predict_proba`` does, padding columns no text uses are dropped (exact: padding is masked),
and the logits go through the model's own calibration.

A quantized (int8) export is refused when the AP loss saved at export exceeds ``max_ap_loss``
(default :data:`MAX_INT8_AP_LOSS`) or was never measured, unless ``allow_ap_loss``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..calibration import Calibrator
from ..data import normalize_text
from ..data._common import counted
from ..data.tokenizer import TextTokenizer, trim_padding
from ..errors import ConfigError
from .cache import CacheError, ProductCache, cache_rows_of
from .encoding import TitleArrays, float32_array, padded_query_ids, split_query_batch, used_columns
from .onnx_export import read_export
from .query_cache import QueryCache

MAX_INT8_AP_LOSS = 0.01  # the AP (0–1) an int8 export may lose against its PyTorch model and still be served by default


class QuantizationLossError(ConfigError):
    """An int8 export whose measured AP loss is over the bound (or unmeasured)."""


class OnnxScorer:
    """Defect probabilities of (query, product) pairs with an ONNX export and optional product cache."""

    backend = "onnx"

    def __init__(self, directory: str | Path, cache: ProductCache | None = None, *, threads: int = 1, query_cache: int = 0,
                 max_ap_loss: float = MAX_INT8_AP_LOSS, allow_ap_loss: bool = False) -> None:
        import onnxruntime as ort

        self.directory = Path(directory)
        self.spec = spec = read_export(self.directory)
        self.precision = spec["precision"]
        # int8 activations are quantized per call over the whole batch (dynamic quantization): batched
        # with others, a query's encoding moved by up to ~0.5 (of values up to ~3) in our check, so
        # its score would depend on which requests happened to arrive with it
        self.batching_refused = ("an int8 export quantizes activations over the whole batch, so a query's score would depend on "
                                 "the queries batched with it; serve the fp32 export to batch" if self.precision == "int8" else "")
        if self.precision == "int8" and not allow_ap_loss:
            check_ap_loss(spec, max_ap_loss, self.directory)
        source = spec["source_model"]
        if cache is not None:
            check_cache(cache, spec)
        self.cache = cache
        self.model_hash = source["model_hash"]
        self.name = f"{source['name']}@{self.model_hash.split(':')[-1][:12]}+onnx-{self.precision}"  # as Scorer's, plus the runtime
        self.threshold = float(spec["threshold"])
        self.threshold_note = stale_threshold_note(spec)
        if self.threshold_note:
            import warnings

            warnings.warn(self.threshold_note, stacklevel=2)
        self.matching = bool(spec["matching"])
        self.needs_tokens = bool(spec["needs_title_tokens"])
        self.query_max_len, self.title_max_len = int(spec["query_max_len"]), int(spec["title_max_len"])
        self.tokenizer = TextTokenizer.load(self.directory)
        self.calibrator = Calibrator.load(self.directory)
        self.query_cache = QueryCache(query_cache)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)  # fixed, so latency does not depend on load
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting threads on shared cores
        files = spec["files"]
        session = lambda name: ort.InferenceSession(str(self.directory / files[name]), options, providers=["CPUExecutionProvider"])  # noqa: E731
        self._query, self._score, self._title = session("query"), session("score"), session("title")
        self._score_inputs = [i.name for i in self._score.get_inputs()]

    @classmethod
    def load(cls, directory: str | Path, cache_dir: str | Path | None = None, **options) -> "OnnxScorer":
        """An export directory and (optionally) a product cache built by the exported model."""
        return cls(directory, ProductCache(cache_dir) if cache_dir is not None else None, **options)

    def open_cache(self, directory: str | Path) -> ProductCache:
        """The cache in ``directory``, opened; CacheError when it is unreadable or another model built it."""
        cache = ProductCache(directory)
        check_cache(cache, self.spec)
        return cache

    # ----------------------------------------------------------------- encoding
    def encode_query(self, query: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens (1, Tq, C), vector (1, V), mask (1, Tq)) of a normalised query, from the LRU when seen."""
        return self.query_cache.get_or_compute(query, self._run_query)

    def _run_query(self, query: str):
        ids = trim_padding(self.tokenizer.encode([query], self.query_max_len))  # (1, Tq)
        return tuple(self._query.run(None, {"ids": ids.astype(np.int64)}))

    def encode_queries(self, queries: list[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Encodings of normalised queries, each as :meth:`encode_query` gives it alone: those in the
        LRU from it, the others in one padded pass of query.onnx (micro-batching, :mod:`.batching`;
        equal to one-by-one up to float rounding, because padding is masked)."""
        return self.query_cache.get_or_compute_many(queries, self._run_queries)

    def _run_queries(self, queries: list[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        ids, lengths = padded_query_ids(self.tokenizer, queries, self.query_max_len)
        tokens, vector, mask = self._query.run(None, {"ids": ids.astype(np.int64)})
        return split_query_batch(tokens, vector, mask, lengths, np.copy)

    def encode_titles(self, titles: list[str], normalized: bool = False) -> TitleArrays:
        """Title encodings of raw titles with the (fp32) title tower."""
        texts = list(titles) if normalized else [normalize_text(t) for t in titles]
        ids = trim_padding(self.tokenizer.encode(texts, self.title_max_len)).astype(np.int64)  # (N, T)
        tokens, vector, mask = self._title.run(None, {"ids": ids})
        return TitleArrays(vector, tokens, mask) if self.needs_tokens else TitleArrays(vector, None, None)

    # ------------------------------------------------------------------ scoring
    def score_arrays(self, query: str, titles: TitleArrays, batch_size: int = 1024) -> np.ndarray:
        """Probabilities (N,) of a normalised query against N title encodings."""
        return self.score_encoded(self.encode_query(query), titles, batch_size)

    def score_encoded(self, query_encoding, titles: TitleArrays, batch_size: int = 1024) -> np.ndarray:
        """Probabilities (N,) of an encoded query (:meth:`encode_query`) against N title encodings."""
        q_tokens, q_vector, q_mask = query_encoding
        out = []
        for i in range(0, len(titles.vector), batch_size):
            feed = {"q_tokens": q_tokens, "q_vector": q_vector, "q_mask": q_mask, "t_vector": float32_array(titles.vector[i : i + batch_size])}
            if self.needs_tokens:
                mask = np.asarray(titles.mask[i : i + batch_size], dtype=bool)
                T = used_columns(mask)  # padding columns no title in the batch uses dropped (exact)
                feed["t_tokens"] = float32_array(titles.tokens[i : i + batch_size, :T])
                feed["t_mask"] = np.ascontiguousarray(mask[:, :T])
            out.append(self._score.run(None, {k: feed[k] for k in self._score_inputs})[0].astype(np.float64))
        logits = np.concatenate(out) if out else np.zeros(0)
        return self.calibrator.transform_logits(logits)

    def rows(self, ids: list[str], locale: str | None = None) -> np.ndarray:
        """Cache rows of ``ids`` (UnknownProducts / AmbiguousProducts as :meth:`score_ids`)."""
        return cache_rows_of(self.cache, ids, locale)

    def score_rows(self, query_encoding, cache: ProductCache, rows: np.ndarray) -> np.ndarray:
        """Probabilities (N,) of an encoded query against rows of ``cache`` (micro-batching's second half)."""
        return self.score_encoded(query_encoding, cache.take_rows(rows))

    def score_ids(self, query: str, ids: list[str], locale: str | None = None) -> np.ndarray:
        """Probabilities (N,) of cached products; UnknownProducts / AmbiguousProducts as Scorer's."""
        rows = self.rows(ids, locale)  # unknown ids (or no cache) refused before the query is encoded
        titles = self.cache.take_rows(rows)
        return self.score_encoded(self.encode_query(normalize_text(query)), titles)

    def score_titles(self, query: str, titles: list[str]) -> np.ndarray:
        """Probabilities (N,) of raw titles, encoded on the fly by the title tower."""
        return self.score_arrays(normalize_text(query), self.encode_titles(titles))

    def text_problems(self, texts: list[str]) -> list[str]:
        """Per text: "" or why the model sees nothing in it."""
        return self.tokenizer.problems([normalize_text(t) for t in texts])


def check_ap_loss(spec: dict, bound: float, where: Path | str = "the export") -> None:
    """QuantizationLossError when an int8 export's saved AP loss is unmeasured or over ``bound``."""
    measured = (spec.get("quantization") or {}).get("ap_loss")
    if measured is None:
        raise QuantizationLossError(f"{where}: int8 export without a measured AP loss; re-export with --int8 --data PATH, "
                                    "or serve it anyway with --allow-int8-loss")
    if measured > bound:
        q = spec["quantization"]
        interval = (f", 95% interval [{q['ci_low']:+.4f}, {q['ci_high']:+.4f}] over {counted(q['queries'], 'query', 'queries')}"
                    if {"ci_low", "ci_high", "queries"} <= set(q) else "")  # exports before the interval was saved lack it
        raise QuantizationLossError(f"{where}: the int8 export loses {measured:.4f} AP against its PyTorch model{interval} "
                                    f"(over the bound {bound:g}); serve the fp32 export, raise --max-int8-ap-loss, or pass --allow-int8-loss")


def serve_advice(spec: dict, out: Path | str) -> str:
    """How to serve the export in ``out`` (``export``'s closing words): the plain ``serve`` command,
    or, for an int8 export whose AP loss is unmeasured or over serve's default bound
    (:data:`MAX_INT8_AP_LOSS`), that serve refuses it and the flags that let it through — so the
    command suggested is never one that then fails (:func:`check_ap_loss`)."""
    command = f"defectnas serve --backend onnx --model {out}"
    loss = (spec.get("quantization") or {}).get("ap_loss")
    if spec.get("precision") != "int8" or (loss is not None and loss <= MAX_INT8_AP_LOSS):
        return f"serve it with {command}"
    if loss is None:
        return f"its AP loss is unmeasured, so serve refuses it unless given --allow-int8-loss: {command} --allow-int8-loss"
    enough = math.ceil(loss * 1000) / 1000  # the next 0.001 at or above the loss
    return (f"its AP loss {loss:.4f} is over serve's default bound {MAX_INT8_AP_LOSS:g}, so serve refuses it: serve the fp32 export, "
            f"or {command} --max-int8-ap-loss {enough:g} (or --allow-int8-loss)")


def check_cache(cache: ProductCache, spec: dict) -> None:
    """Refuse (CacheError) a product cache that another model than the exported one built (one with
    the same title tower, e.g. the model its query tower was distilled from, counts as the same)."""
    source = spec["source_model"]
    if cache.model_hash == source["model_hash"] or any(cache.manifest.get(key) and cache.manifest[key] == source.get(key)
                                                       for key in ("encoder_hash", "title_tower_hash")):
        return
    raise CacheError(f"{cache.directory}: cache was built by another model than the one exported ({source['name']}); "
                     f"rebuild it with: defectnas cache --model {source['directory']} --catalog ... --out {cache.directory} --rebuild")


def stale_threshold_note(spec: dict) -> str:
    """"" or one line saying the source model's threshold moved since the export (``threshold``
    run afterwards): the export scores with the threshold it was made with, so served
    ``is_defect`` would silently differ from ``predict`` on the model directory."""
    import json

    path = Path(spec["source_model"]["directory"]) / "config.json"
    try:
        now = float(json.loads(path.read_text(encoding="utf-8"))["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # the source model is not here (an export copied elsewhere): nothing to compare
    if abs(now - float(spec["threshold"])) <= 1e-12:
        return ""
    return (f"{path.parent}: its threshold is now {now:.4g}, but this export was made with {float(spec['threshold']):.4g}; "
            f"served is_defect follows the export's — re-export (defectnas export --model {path.parent} ...) to serve the new one")
