"""``defectnas export --format onnx``: the online path of a model as ONNX graphs for onnxruntime.

Why: a ``/score`` request for cached products runs one query through the query tower and a
small head over N cached title encodings. PyTorch's per-op dispatch costs more than that
arithmetic; onnxruntime runs the same graphs with fused kernels, and optionally with int8
weights (dynamic quantization). What an export directory holds:

    export.json        format, source model (name, sha256 of config.json + model.safetensors, and
                       the encoder hash a product cache is checked against), precision, dims,
                       threshold, the fp32 parity check and, for int8, the measured AP loss
    query.onnx         ids (B, Tq) int64 → q_tokens (B, Tq, C), q_vector (B, V), q_mask (B, Tq) bool
    score.onnx         one query's (q_tokens, q_vector, q_mask) (1, ·) and N title encodings
                       (t_vector (N, V) [, t_tokens (N, T, C), t_mask (N, T)]) → logits (N,)
    title.onnx         the title tower (as query.onnx), fp32 always: raw-title requests, so they
                       score as the cache (built by PyTorch in float32) does
    tokenizer.json     the model's tokenizer
    calibration.json   the model's calibration (logit → probability), applied after score.onnx

Axes for the query length, title length and product count are dynamic. Everything is JSON or
ONNX protobuf; loading never unpickles. ``--int8`` quantizes query.onnx and score.onnx with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations quantized per call)
and measures what that costs: average precision on a labelled table's test split, int8 against
the PyTorch model (:func:`ap_loss`), saved in export.json so ``serve`` can refuse a quantized
model that lost too much.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import __version__
from ..data._common import counted
from ..errors import ConfigError, DataError
from ..storage import atomic_write_json, read_json

FORMAT = "defectnas-onnx-export"
FORMAT_VERSION = 1
EXPORT_FILE = "export.json"
QUERY_FILE, SCORE_FILE, TITLE_FILE = "query.onnx", "score.onnx", "title.onnx"
OPSET = 17  # LayerNormalization is a single op from 17 on
PARITY_ATOL = 1e-4  # fp32 ONNX probabilities must match PyTorch's this closely (checked at export)


class _Tower(nn.Module):
    """One tower as a graph: ids (B, T) → token states, pooled vector, mask."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: torch.Tensor):
        tokens, vector, mask = self.encoder(ids)
        return tokens, vector, mask  # (B, T, C), (B, V), (B, T)


class _Head(nn.Module):
    """The score of one query against N titles (:meth:`DefectNet.score_one_query`: the query's
    part computed once, not broadcast over the products)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.tokens = net.needs_title_tokens

    def forward(self, q_tokens, q_vector, q_mask, t_vector, t_tokens=None, t_mask=None):
        from ..model.classifier import Encoded

        return self.net.score_one_query(Encoded(q_tokens, q_vector, q_mask), Encoded(t_tokens, t_vector, t_mask))  # (N,)


def export_onnx(model_dir: str | Path, out: str | Path, *, int8: bool = False, eval_pairs: pd.DataFrame | None = None,
                eval_source: str = "", opset: int = OPSET, log=None) -> dict:
    """Write the ONNX export of ``model_dir`` into ``out`` and return its export.json.

    ``int8``: quantize the query tower and the head; needs ``eval_pairs`` (query, title, label:
    the test split of a labelled table) on which the AP loss is measured and saved.
    """
    from ..estimator import DefectClassifier
    from .cache import encoder_hash, model_hash, served_name, title_tower_hash

    if int8 and (eval_pairs is None or not len(eval_pairs)):
        raise DataError("--int8 needs labelled data (--data) to measure the quantized model's AP loss on its test split")
    log = log or (lambda m: None)
    model_dir, out = Path(model_dir), Path(out)
    clf = DefectClassifier.load(model_dir)
    net = clf.model_.eval()
    cfg = clf.model_config_
    if cfg.encoder != "transformer" or cfg.interaction != "pooled":
        raise ConfigError(f"ONNX export supports the transformer two-tower model with the pooled interaction, "
                          f"not encoder={cfg.encoder!r}, interaction={cfg.interaction!r}")
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPORT_FILE).unlink(missing_ok=True)  # an export is usable only once export.json is written, last
    digest = model_hash(model_dir)

    # example inputs from real text, with padding, so every op sees what it will see in service
    q_ids = torch.from_numpy(clf.tokenizer_.encode(["cordless drill", "white paint brush set"], cfg.query_max_len))
    t_ids = torch.from_numpy(clf.tokenizer_.encode(["acme cordless drill 20v", "garden hose", "brass faucet for kitchen sink"], cfg.title_max_len))
    with torch.inference_mode():
        q = net.encode_query(q_ids[:1])
        t = net.encode_title(t_ids)
    tokens = net.needs_title_tokens
    head_inputs = ["q_tokens", "q_vector", "q_mask", "t_vector"] + (["t_tokens", "t_mask"] if tokens else [])
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as tmp:
        tmp = Path(tmp)
        tower_axes = {"ids": {0: "batch", 1: "length"}, "tokens": {0: "batch", 1: "length"}, "vector": {0: "batch"}, "mask": {0: "batch", 1: "length"}}
        _export(_Tower(net.query_encoder), (q_ids,), tmp / QUERY_FILE, ["ids"], ["tokens", "vector", "mask"], tower_axes, opset)
        _export(_Tower(net.title_encoder), (t_ids,), tmp / TITLE_FILE, ["ids"], ["tokens", "vector", "mask"], tower_axes, opset)
        head_args = (q.tokens, q.vector, q.mask, t.vector) + ((t.tokens, t.mask) if tokens else ())
        head_axes = {"q_tokens": {1: "query_length"}, "q_mask": {1: "query_length"}, "t_vector": {0: "products"},
                     "t_tokens": {0: "products", 1: "title_length"}, "t_mask": {0: "products", 1: "title_length"}, "logits": {0: "products"}}
        _export(_Head(net), head_args, tmp / SCORE_FILE, head_inputs, ["logits"], {k: head_axes[k] for k in head_inputs + ["logits"] if k in head_axes}, opset)
        for name in (QUERY_FILE, SCORE_FILE, TITLE_FILE):
            (tmp / name).replace(out / name)
    clf.tokenizer_.save(out)
    clf.calibrator_.save(out)
    spec = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
        "torch_version": torch.__version__, "onnx_version": _version("onnx"), "onnxruntime_version": _version("onnxruntime"),
        "opset": opset, "precision": "fp32",
        "source_model": {"directory": str(model_dir.resolve()), "name": served_name(model_dir), "model_hash": digest,
                         "encoder_hash": encoder_hash(model_dir), "title_tower_hash": title_tower_hash(model_dir)},
        "files": {"query": QUERY_FILE, "score": SCORE_FILE, "title": TITLE_FILE, "tokenizer": "tokenizer.json", "calibration": "calibration.json"},
        "score_inputs": head_inputs,
        "matching": bool(cfg.matching), "needs_title_tokens": bool(tokens),
        "query_max_len": cfg.query_max_len, "title_max_len": cfg.title_max_len,
        "vector_dim": int(q.vector.shape[-1]), "token_dim": int(q.tokens.shape[-1]),
        "threshold": float(clf.threshold_), "threshold_rule": getattr(clf, "threshold_rule_", ""),
        "calibration": {"file": "calibration.json", "method": clf.calibrator_.method},
        "parity": None, "quantization": None,
    }
    atomic_write_json(out / EXPORT_FILE, spec)  # the fp32 export, loadable for its parity check
    spec["parity"] = _parity(clf, out)
    if int8:
        from .onnx_backend import OnnxScorer

        (out / EXPORT_FILE).unlink()
        for name in (QUERY_FILE, SCORE_FILE):
            _quantize(out / name, out / f".int8-{name}")
            (out / f".int8-{name}").replace(out / name)
        spec["precision"] = "int8"
        atomic_write_json(out / EXPORT_FILE, spec)
        log(f"measuring the int8 AP loss on {counted(len(eval_pairs), 'pair')}{f' of {eval_source}' if eval_source else ''}")
        spec["quantization"] = {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                                "quantized": [QUERY_FILE, SCORE_FILE], "data": eval_source,
                                **ap_loss(clf, OnnxScorer.load(out, allow_ap_loss=True), eval_pairs)}
        log(describe_ap_loss(spec["quantization"]))
    atomic_write_json(out / EXPORT_FILE, spec)
    return spec


def ap_loss(clf, scorer, pairs: pd.DataFrame, resamples: int = 1000) -> dict:
    """Average precision of the PyTorch model and of ``scorer`` (an ONNX scorer) on labelled
    ``pairs`` (query, title, label), title encodings from PyTorch as a product cache holds them:
    ``{"pairs", "defects", "queries", "ap_torch", "ap_onnx", "ap_loss" (torch − onnx), "ci_low",
    "ci_high" (its 95% interval, a paired bootstrap over the pairs' queries:
    :func:`~defectnas.training.significance.paired_bootstrap`), "resamples", "max_abs_diff"}``.

    Why the interval: the loss is measured on one test split (a few hundred pairs of a few dozen
    queries on the shared samples), and a user deciding whether to serve int8 needs to know
    whether 0.004 means 0.004 or anything from −0.01 to +0.02. Raises DataError when the pairs do
    not hold both classes."""
    from ..training.significance import average_precision_fast, paired_bootstrap

    pairs = pairs.reset_index(drop=True)
    labels = pairs["label"].to_numpy(dtype=np.int64)
    if labels.min(initial=1) == labels.max(initial=0):
        raise DataError("the AP loss needs labelled pairs of both classes (defects and relevant ones)")
    reference = clf.predict_proba(pairs["query"].tolist(), pairs["title"].tolist())
    probs = score_pairs(clf, scorer, pairs)
    loss = paired_bootstrap(labels, pairs["query"].astype(str).to_numpy(), reference, probs, resamples=resamples)
    return {"pairs": int(len(pairs)), "defects": int(labels.sum()), "queries": loss["queries"],
            "ap_torch": average_precision_fast(labels, reference), "ap_onnx": average_precision_fast(labels, probs),
            "ap_loss": loss["diff"], "ci_low": loss["ci_low"], "ci_high": loss["ci_high"], "resamples": loss["resamples"],
            "max_abs_diff": float(np.abs(probs - reference).max())}


def describe_ap_loss(measured: dict) -> str:
    """One line for people: the int8 AP loss, its interval, and whether its queries are enough to
    trust it (fewer than :data:`~defectnas.training.significance.FEW_QUERIES` are not)."""
    from ..training.significance import FEW_QUERIES

    line = (f"int8 AP loss {measured['ap_loss']:+.4f} (AP {measured['ap_torch']:.4f} → {measured['ap_onnx']:.4f}); "
            f"95% interval [{measured['ci_low']:+.4f}, {measured['ci_high']:+.4f}] over {counted(measured['queries'], 'query', 'queries')}, "
            "paired bootstrap")
    if measured["queries"] < FEW_QUERIES:
        line += f" — on fewer than {FEW_QUERIES} queries the interval itself is rough; measure on more labelled queries"
    return line


def score_pairs(clf, scorer, pairs: pd.DataFrame, batch_size: int = 512) -> np.ndarray:
    """Probabilities of (query, title) pairs through ``scorer``, each distinct title encoded once
    by the PyTorch title tower (as ``defectnas cache`` does) and each distinct query once."""
    from ..data import normalize_text
    from .encoding import TitleArrays, encode_titles

    queries = pairs["query"].astype(str).map(normalize_text).to_numpy()
    titles = pairs["title"].astype(str).map(normalize_text)
    distinct, rows = np.unique(titles.to_numpy(), return_inverse=True)
    parts = [encode_titles(clf, distinct[i : i + batch_size].tolist(), normalized=True) for i in range(0, len(distinct), batch_size)]
    arrays = TitleArrays(np.concatenate([p.vector for p in parts]),
                         *(None, None) if parts[0].tokens is None else
                         (_stack([p.tokens for p in parts]), _stack([p.mask for p in parts])))
    out = np.zeros(len(pairs))
    for query in pd.unique(queries):
        at = np.flatnonzero(queries == query)
        take = rows[at]
        sub = TitleArrays(arrays.vector[take], *(None, None) if arrays.tokens is None else (arrays.tokens[take], arrays.mask[take]))
        out[at] = scorer.score_arrays(query, sub)
    return out


def _stack(blocks: list[np.ndarray]) -> np.ndarray:
    """Concatenate (n, T, ...) blocks whose T may differ (right-padded with zeros / False)."""
    width = max(b.shape[1] for b in blocks)
    return np.concatenate([np.pad(b, [(0, 0), (0, width - b.shape[1])] + [(0, 0)] * (b.ndim - 2)) for b in blocks])


def _parity(clf, out: Path) -> dict:
    """Max |Δ probability| of the fp32 export against PyTorch on a few texts (query tower, title
    tower and head); raises over PARITY_ATOL, so a graph that does not compute the model is never
    left looking usable."""
    from .onnx_backend import OnnxScorer

    queries = ["cordless drill", "white paint", "x"]
    titles = ["acme cordless drill 20v", "garden hose 50 ft", "brass faucet for kitchen sink with sprayer", "lamp"]
    scorer = OnnxScorer.load(out)
    diff = 0.0
    for query in queries:
        expected = clf.predict_proba([query] * len(titles), titles)
        diff = max(diff, float(np.abs(scorer.score_titles(query, titles) - expected).max()))
    if diff > PARITY_ATOL:
        raise ConfigError(f"the ONNX export does not reproduce the model: max |Δp| {diff:.2e} > {PARITY_ATOL:g}")
    return {"checked": "query tower, title tower and head, fp32", "max_abs_diff": diff, "atol": PARITY_ATOL}


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict, opset: int) -> None:
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shapes read as Python numbers: the axes are declared dynamic
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=opset, dynamo=False, do_constant_folding=True)


def _quantize(src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime suggests its pre-processing (shape inference, graph optimisation) on every call;
    # measured on the default model's query tower it changes nothing (3.0 ms int8 either way)
    advice = lambda record: not record.getMessage().startswith("Please consider to run pre-processing")  # noqa: E731
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(advice)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def read_export(directory: str | Path) -> dict:
    """export.json of an export directory (DataError when it is not one)."""
    d = Path(directory)
    spec = read_json(d / EXPORT_FILE, DataError,
                     f"{d}: not an ONNX export (no {EXPORT_FILE}); write one with defectnas export --model DIR --format onnx --out {d}")
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise DataError(f"{d / EXPORT_FILE}: not a defectnas ONNX export")
    if spec.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"{d}: exported by a newer defectnas (format {spec['format_version']}); upgrade defectnas")
    return spec


def is_export(directory: str | Path) -> bool:
    return (Path(directory) / EXPORT_FILE).is_file()


__all__ = ["ap_loss", "describe_ap_loss", "export_onnx", "is_export", "read_export", "score_pairs", "EXPORT_FILE"]
