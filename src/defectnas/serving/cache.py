"""The product-encoding cache: a catalogue's title encodings, computed once per model.

Why: the title tower is the expensive half of a score and depends only on the product, and the
catalogue changes slowly, so titles are encoded once (here) and a request only encodes its
short query. On disk, a cache directory holds:

    manifest.json          which model built it (sha256 of config.json + model.safetensors),
                           format version, product count, dims, and the current generation
    gen-000007/ids.json    {"product_id": [...], "title_sha1": [...] [, "product_locale": [...]]} in row order
    gen-000007/vectors.npy float16 (N, V)     pooled title vectors
    gen-000007/tokens.npy  float16 (S, C)     title token states, unpadded: product i's   } only for models
                                              are rows offsets[i]:offsets[i+1]           } with the matching
    gen-000007/offsets.npy int64   (N + 1,)   where each product's tokens start           } layer

Token states are stored without padding (S = the titles' total token count, 18 of 32 slots per
title on average on the Home Depot sample): the padding positions are zeros and masked, so a
title's mask is its first ``length`` positions and nothing is lost. :class:`UnpaddedTokens` and
:class:`UnpaddedMask` read them back as the padded (N, T, C) array and (N, T) mask they stand for.
Format 1 caches (earlier versions: float32, padded ``tokens.npy`` (N, T, C) and ``mask.npy``) are
still read.

Encodings are stored as float16 by default (``dtype="float32"`` keeps them exact when they are encoded so): half the
bytes per product, and the score is still computed in float32 (the arrays are widened when a
request takes its rows), so only the stored values are rounded (relative error ≤ 2⁻¹¹; what
that does to probabilities and AP is measured in ``benchmarks/cache.py``). A cache written in
float32 by an earlier version loads and scores as before; the manifest's ``dtype`` says which.
``dtype="int8"`` (format 3) stores every row — a title's pooled vector, each of its token states —
as int8 with one float32 scale per row (symmetric absmax quantization: value ≈ int8 × scale, scale
= max |value| / 127; files ``vector_scales.npy`` (N,) and ``token_scales.npy`` (S,)): about half
float16's bytes, for catalogues where storage is what limits; :class:`Int8Rows` reads the rows
back as float32. Older versions refuse a format-3 cache in one line instead of misreading it.

Arrays are plain ``.npy`` files, memory-mapped for reading and loaded with
``allow_pickle=False``. Every build writes a new generation directory under a temporary name,
renames it into place and only then replaces ``manifest.json`` (atomically), so a reader, or a
server that reopens the cache, sees either the old cache or the new one, never a mix, and a
killed build leaves the old cache intact. An update re-encodes only products that are new or
whose normalised title changed, copies the rest, and drops removed ones.

A catalogue with ``product_locale`` (ESCI) is keyed by (locale, id): a request names the
locale, or uses an id that only one locale has; an id that several locales have is refused
(:class:`AmbiguousProducts`) rather than scored against one of their titles.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..data._common import counted
from ..errors import DataError, DataWarning
from ..storage import atomic_write_json, read_json
from .catalog import CATALOG_ATTR, LOCALE_COLUMN, read_catalog, title_hash
from .encoding import TitleArrays, encode_titles, needs_tokens

FORMAT = "defectnas-product-cache"
FORMAT_VERSION = 3  # newest read. 3: int8 rows + scales (written only for dtype int8); 2: float16 by default, token states
#                    unpadded (+ offsets.npy); 1 (still read): float32, padded + mask.npy
MANIFEST = "manifest.json"
LOCK = ".lock"  # held while a build writes
GENERATION_DIR = re.compile(r"gen-\d{6,}")  # gen-000007: one generation's arrays
IDS, VECTORS, TOKENS, MASK, OFFSETS = "ids.json", "vectors.npy", "tokens.npy", "mask.npy", "offsets.npy"
VECTOR_SCALES, TOKEN_SCALES = "vector_scales.npy", "token_scales.npy"  # int8 caches: one float32 scale per stored row
UNPADDED = "unpadded"  # manifest token_layout of format 2 (format 1: padded)
_COPY_ROWS = 8192  # rows copied from the previous generation per step (bounds memory)
DTYPES = ("float16", "float32", "int8")  # how encodings are stored (token mask: bool; int8 with a scale per row)
# a conversion to a wider dtype casts the stored values, so they keep the narrower one's rounding: said in a warning
PRECISION = {"int8": 0, "float16": 1, "float32": 2}
DEFAULT_DTYPE = "float16"


class CacheError(DataError):
    """A cache directory is missing, unreadable, of another format, or built by another model."""


class UnknownProducts(LookupError):
    """Product ids that are not in the cache (``no_cache``: no cache is loaded at all)."""

    def __init__(self, ids: list[str], locale: str | None = None, no_cache: bool = False) -> None:
        super().__init__(ids)
        self.ids = ids
        self.locale = locale
        self.no_cache = no_cache


class AmbiguousProducts(LookupError):
    """Bare product ids that several locales of the cache hold: ``{id: [locales]}``."""

    def __init__(self, locales: dict[str, list[str]]) -> None:
        super().__init__(locales)
        self.locales = locales


def product_key(product_id: str, locale: str | None) -> str:
    """The cache's key of a product: its id, or locale + U+001F + id where products have locales."""
    return product_id if locale is None else f"{locale}\x1f{product_id}"


def model_hash(model_dir: str | Path) -> str:
    """``sha256:<hex>`` of a model directory's config.json and model.safetensors (their bytes)."""
    d = Path(model_dir)
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        path = d / name
        if not path.is_file():
            raise CacheError(f"{d}: not a model directory (no {name})")
        h.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def served_name(model_dir: str | Path) -> str:
    """How responses name a model: its directory's name, with the parent's when the name alone is a
    bare number (a search's ``pareto/0`` is "pareto/0", not "0"); ``serve`` adds ``@`` and the hash."""
    d = Path(model_dir).resolve()
    return f"{d.parent.name}/{d.name}" if d.name.isdigit() and d.parent.name else d.name


# config.json keys that decide is_defect, not the encodings: changing them (`defectnas threshold`)
# keeps a cache valid.
DECISION_KEYS = ("threshold", "threshold_rule", "operating_point", "group_thresholds", "valid_f1")


def encoder_hash(model_dir: str | Path) -> str:
    """``sha256:<hex>`` of what the cached encodings depend on: config.json without the
    decision keys (canonical JSON) and model.safetensors."""
    d = Path(model_dir)
    config = read_json(d / "config.json", CacheError, f"{d}: not a model directory (no config.json)")
    h = hashlib.sha256(json.dumps({k: v for k, v in config.items() if k not in DECISION_KEYS}, sort_keys=True).encode())
    try:
        with open(d / "model.safetensors", "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise CacheError(f"{d}: not a model directory (no model.safetensors)") from None
    except OSError as e:
        raise CacheError(f"{d}: not a readable model directory ({e})") from None
    return "sha256:" + h.hexdigest()


# model config keys that shape only the query tower: a model that differs from another in these
# alone (its query tower distilled, DefectClassifier.distill_query) encodes titles the same way
QUERY_ONLY_KEYS = ("query_layers", "query_max_len", "query_backbone_layers", "query_backbone_trainable")


def title_tower_hash(model_dir: str | Path) -> str:
    """``sha256:<hex>`` of what a cached title encoding depends on: the title tower's tensors
    (``title_encoder.*``, which include the pre-trained layers it reads), the model configuration
    without :data:`QUERY_ONLY_KEYS` (whether the query tower has pre-trained layers is kept: it
    decides the sentence vector), and tokenizer.json. A model whose query tower was distilled from
    another's shares that model's title tower, and so its product caches."""
    from ..storage import hash_tensors, load_tensors

    d = Path(model_dir)
    config = read_json(d / "config.json", CacheError, f"{d}: not a model directory (no config.json)")
    try:
        config = config["model"]
        tensors, _ = load_tensors(d / "model.safetensors")
        tokenizer = (d / "tokenizer.json").read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CacheError(f"{d}: not a readable model directory ({e})") from None
    shape = {k: v for k, v in config.items() if k not in QUERY_ONLY_KEYS}
    shape["query_has_pretrained_layers"] = bool(config.get("query_backbone_layers"))
    h = hashlib.sha256(json.dumps(shape, sort_keys=True).encode() + b"\0" + tokenizer)
    hash_tensors(h, {k: t for k, t in tensors.items() if k.startswith("title_encoder.")})
    return "sha256:" + h.hexdigest()


def _same_encodings(manifest: dict, model_dir: str | Path | None) -> bool:
    """Whether a cache (its manifest) holds what ``model_dir`` would encode although another model
    directory built it: the same encoder (:func:`encoder_hash`: only a decision key such as the
    threshold changed) or the same title tower (:func:`title_tower_hash`: e.g. a distilled query tower)."""
    if not (isinstance(model_dir, (str, Path)) and Path(model_dir).is_dir()):
        return False
    return any(manifest.get(key) and manifest[key] == digest(model_dir)
               for key, digest in (("encoder_hash", encoder_hash), ("title_tower_hash", title_tower_hash)))


@dataclass
class BuildReport:
    """What a build or update did."""

    count: int  # products in the cache now
    encoded: int  # products encoded by this build (new + changed)
    added: int  # ids not in the previous cache
    changed: int  # ids whose normalised title changed
    removed: int  # ids of the previous cache no longer in the catalogue
    kept: int  # products copied unchanged from the previous cache
    seconds: float  # wall time of the build
    bytes: int  # size of the new generation on disk
    directory: str  # the cache directory
    written: bool = True  # False: the cache was up to date and left as it was (no new generation)
    dtype: str = DEFAULT_DTYPE  # how the cache stores its encodings now

    @property
    def products_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


class ProductCache:
    """An opened cache: product ids, their row index, and memory-mapped encodings."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        gen = self.directory / self.manifest["generation_dir"]
        try:
            ids = json.loads((gen / IDS).read_text(encoding="utf-8"))
            self.ids: list[str] = ids["product_id"]
            self.title_hashes: list[str] = ids["title_sha1"]
            self.locales: list[str] | None = ids.get("product_locale")  # None: products are keyed by id alone
            dtype = _manifest_dtype(self.manifest, self.directory)
            int8 = dtype == "int8"
            vector = _stored(gen, VECTORS, dtype, self.directory)
            if int8:
                vector = Int8Rows(vector, _mapped(gen / VECTOR_SCALES))
            tokens = mask = None
            if self.manifest["matching"]:
                tokens = _stored(gen, TOKENS, dtype, self.directory)
                if int8:
                    tokens = Int8Rows(tokens, _mapped(gen / TOKEN_SCALES))
                if self.manifest.get("token_layout") == UNPADDED:
                    offsets = np.load(gen / OFFSETS, allow_pickle=False)
                    if offsets.ndim != 1 or len(offsets) != len(self.ids) + 1 or offsets[-1] > len(tokens):
                        raise ValueError(f"{OFFSETS} does not match {TOKENS}")
                    tokens = UnpaddedTokens(tokens, offsets, int(self.manifest["title_max_len"]))
                    mask = UnpaddedMask(tokens)
                else:
                    mask = _mapped(gen / MASK)
        except CacheError:
            raise  # already one line saying what is wrong
        except (OSError, ValueError, KeyError) as e:
            raise CacheError(f"{self.directory}: cache files unreadable ({type(e).__name__}: {e}); {_rebuild(self.directory)}") from None
        self.arrays = TitleArrays(vector, tokens, mask)  # tokens, mask: (N, T, C), (N, T) padded, as arrays or as unpadded views
        n = self.manifest["count"]
        if len(self.ids) != n or vector.shape[0] != n or (tokens is not None and tokens.shape[0] != n):
            raise CacheError(f"{self.directory}: cache files disagree with the manifest ({n} products); {_rebuild(self.directory)}")
        self.keys = self.ids if self.locales is None else [product_key(i, loc) for i, loc in zip(self.ids, self.locales)]
        self.rows_by_key = {key: row for row, key in enumerate(self.keys)}
        # bare ids that name one product (all ids when there are no locales); ambiguous ones listed apart
        self.ambiguous: dict[str, list[str]] = {}
        if self.locales is None:
            self.index = self.rows_by_key
        else:
            seen: dict[str, list[int]] = {}
            for row, pid in enumerate(self.ids):
                seen.setdefault(pid, []).append(row)
            self.index = {pid: rows[0] for pid, rows in seen.items() if len(rows) == 1}
            self.ambiguous = {pid: sorted(self.locales[r] for r in rows) for pid, rows in seen.items() if len(rows) > 1}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def model_hash(self) -> str:
        return self.manifest["model_hash"]

    @property
    def dtype(self) -> str:
        """How the encodings are stored: "float16", "float32" (caches of earlier versions) or "int8"."""
        return str(getattr(self.arrays.vector, "stored_dtype", self.arrays.vector.dtype))

    @property
    def generation(self) -> int:
        """The generation number of the opened cache (each build that changes it adds one)."""
        return int(self.manifest["generation"])

    @property
    def bytes_per_product(self) -> float:
        """Bytes of encodings (vectors, token states and their mask or offsets) per product, as stored."""
        return sum(a.nbytes for a in self.arrays if a is not None) / max(len(self), 1)

    def check_model(self, expected_hash: str, model_dir: str | Path = "the model") -> None:
        """Refuse (CacheError) a cache that another model built (a new threshold is the same model;
        a model whose query tower was distilled from the builder's has the builder's title tower)."""
        if self.model_hash != expected_hash and not _same_encodings(self.manifest, model_dir):
            raise CacheError(
                f"{self.directory}: cache was built by another model ({_short(self.model_hash)}, not {_short(expected_hash)} of {model_dir}); "
                f"rebuild it with: defectnas cache --model {model_dir} --catalog ... --out {self.directory} --rebuild"
            )

    def missing(self, ids: list[str], locale: str | None = None) -> list[str]:
        """The ids not in the cache (in ``locale``, when given), each once, in request order."""
        if locale is not None:
            return list(dict.fromkeys(i for i in ids if product_key(i, locale) not in self.rows_by_key))
        return list(dict.fromkeys(i for i in ids if i not in self.index and i not in self.ambiguous))

    def rows(self, ids: list[str], locale: str | None = None) -> np.ndarray:
        """Row of each id (in ``locale`` when given); UnknownProducts for ids not cached,
        AmbiguousProducts for bare ids that several locales hold."""
        if locale is not None and self.locales is None:
            raise UnknownProducts(list(dict.fromkeys(ids)), locale)
        missing = self.missing(ids, locale)
        if missing:
            raise UnknownProducts(missing, locale)
        if locale is not None:
            return np.fromiter((self.rows_by_key[product_key(i, locale)] for i in ids), dtype=np.int64, count=len(ids))
        ambiguous = {i: self.ambiguous[i] for i in dict.fromkeys(ids) if i in self.ambiguous}
        if ambiguous:
            raise AmbiguousProducts(ambiguous)
        return np.fromiter((self.index[i] for i in ids), dtype=np.int64, count=len(ids))

    def take(self, ids: list[str], locale: str | None = None) -> TitleArrays:
        """Encodings of ``ids`` in request order (see :meth:`rows`)."""
        return self.take_rows(self.rows(ids, locale))

    def take_rows(self, rows: np.ndarray) -> TitleArrays:
        """Encodings (padded arrays: vector (n, V); tokens (n, T, C), mask (n, T) or None) of cache ``rows``."""
        return take_encodings(self.arrays, rows)


def _manifest_dtype(manifest: dict, directory: Path) -> str:
    """The dtype the manifest says the arrays hold: its ``dtype`` field (format 2 on), float32 for
    format 1 (which had none); CacheError when a format-2/3 manifest lacks it or names another."""
    if manifest.get("format_version", 1) < 2:
        return "float32"
    dtype = manifest.get("dtype")
    if dtype not in DTYPES:
        raise CacheError(f"{directory / MANIFEST}: dtype {dtype!r} is not one of {', '.join(DTYPES)}; {_rebuild(directory)}")
    return dtype


def _stored(gen: Path, name: str, dtype: str, directory: Path) -> np.ndarray:
    """An encodings file of generation ``gen``, memory-mapped, checked to hold the manifest's dtype
    (read as another, e.g. int8 values taken as float16, every score would be silently wrong)."""
    array = _mapped(gen / name)
    if array.dtype != np.dtype(dtype):
        raise CacheError(f"{directory}: manifest.json says dtype {dtype} but {gen.name}/{name} holds {array.dtype}; {_rebuild(directory)}")
    return array


def _rebuild(directory: str | Path) -> str:
    """What to do about a cache that cannot be read as it is (the end of its one-line error)."""
    return f"build the cache anew with defectnas cache ... --out {directory} --rebuild"


def _mapped(path: Path) -> np.ndarray:
    """A read-only ``.npy`` file memory-mapped, as a plain ndarray view of the mapping: indexing an
    ``np.memmap`` runs Python code of the subclass on every request (~0.2 ms of a 100-product
    request, measured), a plain view shares the same pages without it."""
    return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))


def cache_rows_of(cache: "ProductCache | None", ids: list[str], locale: str | None = None) -> np.ndarray:
    """Rows of ``ids`` in ``cache`` (:meth:`ProductCache.rows`); without a cache every id is unknown
    (UnknownProducts), as a scorer serving raw titles only answers a request for cached ids."""
    if cache is None:
        raise UnknownProducts(list(dict.fromkeys(ids)), locale, no_cache=True)
    return cache.rows(ids, locale)


class _RowView:
    """What the cache's array views share: ``len`` is rows, and ``np.asarray`` reads them all."""

    shape: tuple[int, ...]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)


class Int8Rows(_RowView):
    """Rows of float values stored as int8 with one float32 scale per row, read and written as float32.

    Symmetric absmax quantization per row (one pooled vector, or one token state): ``scale = max
    |x| / 127`` and ``q = round(x / scale)``, so each value is off by at most ``scale / 2`` (half a
    step of its own row's range). Reading ``rows[i]`` (an int, a slice or an int array) gives
    ``q * scale`` as float32; writing quantizes. Re-quantizing what was read gives back the same
    int8 values, so an update copies kept products unchanged."""

    ndim = 2
    dtype = np.dtype(np.float32)  # what reading gives
    stored_dtype = "int8"

    def __init__(self, values: np.ndarray, scales: np.ndarray) -> None:
        if values.ndim != 2 or scales.shape != values.shape[:1]:
            raise ValueError(f"int8 rows {values.shape} and scales {scales.shape} disagree")
        self.values, self.scales = values, scales  # (R, C) int8, (R,) float32
        self.shape = values.shape

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.scales.nbytes)

    def __getitem__(self, rows) -> np.ndarray:
        return np.multiply(self.values[rows], self.scales[rows][..., None], dtype=np.float32)

    def __setitem__(self, rows, x) -> None:
        x = np.asarray(x, dtype=np.float32)
        scale = np.abs(x).max(axis=-1, initial=0.0) / 127
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero row stays zeros
        self.values[rows] = np.clip(np.rint(x / scale[..., None]), -127, 127).astype(np.int8)
        self.scales[rows] = scale

    def flush(self) -> None:
        for a in (self.values, self.scales):
            if hasattr(a, "flush"):
                a.flush()


class UnpaddedTokens(_RowView):
    """Title token states stored without padding — ``flat`` (S, C), product i's in rows
    ``offsets[i]:offsets[i + 1]`` — read as the zero-padded (N, T, C) array they stand for.

    Indexing takes rows (an int, a slice or an int array) and optionally a slice of the T token
    positions, ``tokens[rows]`` or ``tokens[rows, :t]``, and returns a plain array (a copy)."""

    ndim = 3

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, max_len: int) -> None:
        self.flat, self.offsets = flat, np.asarray(offsets, dtype=np.int64)
        self.lengths = np.diff(self.offsets)  # (N,) tokens of each title
        self.shape = (len(self.lengths), max_len, flat.shape[1])
        self.dtype = flat.dtype

    @property
    def nbytes(self) -> int:
        return int(self.flat.nbytes + self.offsets.nbytes)

    def _rows(self, rows) -> tuple[np.ndarray, bool]:
        if isinstance(rows, slice):
            return np.arange(len(self))[rows], False
        rows = np.asarray(rows)
        return np.atleast_1d(rows).astype(np.int64), rows.ndim == 0

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        rows, scalar = self._rows(rows)
        states, _ = self.take(rows)
        out = np.zeros((len(rows), self.shape[1], self.shape[2]), dtype=self.dtype)
        out[:, : states.shape[1]] = states
        out = out[:, cols]
        return out[0] if scalar else out

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (n, L, C), mask (n, L)) of ``rows``, padded only to the longest of them (L ≥ 1):
        what a request needs (the score drops padding columns no title uses anyway)."""
        lengths = self.lengths[rows]
        longest = max(int(lengths.max(initial=0)), 1)
        valid = np.arange(longest)[None, :] < lengths[:, None]  # (n, L)
        index = np.where(valid, self.offsets[rows][:, None] + np.arange(longest)[None, :], 0).reshape(-1)
        if not len(self.flat):
            return np.zeros((len(rows), longest, self.shape[2]), dtype=self.dtype), valid
        # (n·L, C); np.take is ~4× faster than fancy indexing on an array (~17 against ~68 µs a request); int8 rows dequantize
        states = np.take(self.flat, index, axis=0) if isinstance(self.flat, np.ndarray) else self.flat[index]
        states[np.flatnonzero(~valid.reshape(-1))] = 0  # padding positions read row 0: zeroed
        return states.reshape(len(rows), longest, -1), valid


class UnpaddedMask(_RowView):
    """The padding mask (N, T) bool of :class:`UnpaddedTokens`: each title's first ``length`` positions (nothing stored)."""

    ndim = 2
    dtype = np.dtype(bool)
    nbytes = 0

    def __init__(self, tokens: UnpaddedTokens) -> None:
        self.tokens = tokens
        self.shape = tokens.shape[:2]

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        rows, scalar = self.tokens._rows(rows)
        out = (np.arange(self.shape[1])[None, :] < self.tokens.lengths[rows][:, None])[:, cols]
        return out[0] if scalar else out


def read_manifest(directory: str | Path) -> dict:
    d = Path(directory)
    path = d / MANIFEST
    try:
        manifest = read_json(path, CacheError, f"{d}: not a product cache (no {MANIFEST}); build one with defectnas cache")
    except CacheError as e:
        raise CacheError(f"{e}; {_rebuild(d)}" if path.exists() else str(e)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheError(f"{path}: not a defectnas product cache manifest; {_rebuild(d)}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CacheError(f"{d}: cache written by a newer defectnas (format {manifest['format_version']}); upgrade defectnas or rebuild it")
    return manifest


def build_cache(
    model_dir: str | Path,
    catalog: pd.DataFrame | str | Path,
    out: str | Path,
    *,
    batch_size: int = 512,
    rebuild: bool = False,
    quiet: bool = True,
    clf=None,
    invalid_rows: str = "skip",
    dtype: str | None = None,
    ray_address: str | None = None,
    ray_actors: int = 0,
) -> BuildReport:
    """Encode ``catalog`` (a product table, pairs dataset or path: see :func:`read_catalog`) into ``out``.

    An existing cache in ``out`` is updated incrementally (only new and changed products are
    encoded) when the same model built it; a cache of another model is refused (CacheError)
    unless ``rebuild``. ``clf``: the already loaded ``DefectClassifier`` of ``model_dir``.
    Titles the model sees as nothing or as unknown pieces only are left out with one
    DataWarning line (``invalid_rows="skip"``) or refused (``"error"``), as ``predict`` does.
    ``dtype``: how encodings are stored, ``"float16"`` (half the bytes), ``"float32"`` (exact) or
    ``"int8"`` (a byte per value and a scale per row); None (default): an existing cache's own
    dtype, else float16 (a cache of an earlier version, format 1, becomes float16). A cache of
    another dtype is converted by the update: kept rows are cast, not re-encoded, so a conversion to a
    wider dtype (int8 → float16/float32, float16 → float32) keeps the narrower one's rounding (one
    warning line; ``rebuild`` re-encodes).
    ``ray_address`` (``auto``, ``local``, ``ray://host:port``): titles are encoded by Ray actors
    (``ray_actors``, 0: one per CPU of the cluster; see :mod:`.ray_build`) in the batches a local
    build would encode; everything else, and the result, is the local build's.
    """
    from ..estimator import DefectClassifier

    start = time.perf_counter()
    out = Path(out)
    if batch_size < 1:
        raise DataError("batch_size must be at least 1")
    if dtype is not None and dtype not in DTYPES:
        raise DataError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not (isinstance(catalog, pd.DataFrame) and catalog.attrs.get(CATALOG_ATTR)):
        catalog, _ = read_catalog(catalog, invalid_rows=invalid_rows)  # normalised titles, one row per product
    digest = model_hash(model_dir)
    clf = clf if clf is not None else DefectClassifier.load(model_dir)
    clf.model_.eval()
    catalog = _screen_titles(clf, catalog, invalid_rows)
    _refuse_foreign(out)
    with _build_lock(out):
        return _build(clf, digest, model_dir, catalog, out, batch_size, rebuild, quiet, start, dtype, (ray_address, ray_actors))


def _screen_titles(clf, catalog: pd.DataFrame, invalid_rows: str) -> pd.DataFrame:
    """The catalogue without titles the model cannot score (see :meth:`DefectClassifier.text_problems`)."""
    titles = catalog["title"].astype(str).tolist()
    problems = clf.tokenizer_.problems(titles)
    bad = np.array([bool(p) for p in problems], dtype=bool)
    if not bad.any():
        return catalog
    first = int(np.argmax(bad))
    shown = ", ".join(catalog["product_id"].astype(str).to_numpy()[bad][:10])
    message = (f"{counted(int(bad.sum()), 'product')} whose title the model sees as nothing or only unknown word pieces "
               f"(first: {catalog['product_id'].iloc[first]!r}, {problems[first]}): {shown}")
    if invalid_rows == "error":
        raise DataError(message + " (--invalid-rows skip leaves them out)")
    warnings.warn(message + ": not cached", DataWarning, stacklevel=3)
    out = catalog.loc[~bad].reset_index(drop=True)
    out.attrs.update(catalog.attrs)
    return out


def _build(clf, digest: str, model_dir, catalog: pd.DataFrame, out: Path, batch_size: int, rebuild: bool, quiet: bool, start: float,
           dtype: str, ray: tuple[str | None, int] = (None, 0)) -> BuildReport:
    previous = _previous(out, digest, model_dir, rebuild)
    if dtype is None:  # keep the cache's own dtype (also through --rebuild); earlier versions (format 1) had only float32: the default
        dtype = _existing_dtype(out) or DEFAULT_DTYPE
    ids = catalog["product_id"].astype(str).tolist()
    locales = catalog[LOCALE_COLUMN].astype(str).tolist() if LOCALE_COLUMN in catalog.columns else None
    keys = ids if locales is None else [product_key(i, loc) for i, loc in zip(ids, locales)]
    titles = catalog["title"].astype(str).tolist()
    hashes = [title_hash(t) for t in titles]
    old_rows = np.full(len(ids), -1, dtype=np.int64)  # row in the previous cache to copy, or -1: encode
    added = changed = 0
    for i, (pid, h) in enumerate(zip(keys, hashes)):
        row = previous.rows_by_key.get(pid) if previous is not None else None
        if row is None:
            added += 1
        elif previous.title_hashes[row] != h:
            changed += 1
        else:
            old_rows[i] = row
    removed = len(previous) - (len(ids) - added) if previous is not None else 0
    kept = int((old_rows >= 0).sum())
    if previous is not None and added == changed == removed == 0 and previous.keys == keys and previous.dtype == dtype:
        return BuildReport(len(ids), 0, 0, 0, 0, kept, time.perf_counter() - start, _size(out / previous.manifest["generation_dir"]), str(out),
                           written=False, dtype=dtype)
    if previous is not None and kept and PRECISION[previous.dtype] < PRECISION[dtype]:
        warnings.warn(f"{out}: the values of {counted(kept, 'kept product')}, converted from {previous.dtype} to {dtype}, keep "
                      f"{previous.dtype}'s rounding (nothing is re-encoded); pass --rebuild to encode them anew", DataWarning, stacklevel=3)

    generation = previous.manifest["generation"] + 1 if previous is not None else _next_generation(out)
    name = f"gen-{generation:06d}"
    tmp = out / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        writer = GenerationWriter(tmp, clf, titles, dtype)
        if previous is not None and kept:
            _copy_kept(previous.arrays, writer, old_rows)
        if ray[0]:
            _encode_on_ray(ray[0], ray[1], model_dir, titles, old_rows, writer, batch_size, quiet,
                           "float32" if dtype == "int8" else dtype)  # int8: quantized by the writer, as in a local build
        else:
            _encode_missing(clf, titles, old_rows, writer, batch_size, quiet)
        writer.close()
        del writer
        atomic_write_json(tmp / IDS, {"product_id": ids, "title_sha1": hashes, **({LOCALE_COLUMN: locales} if locales is not None else {})})
        _fsync_dir_files(tmp)
        final = out / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cfg = clf.model_config_
    atomic_write_json(out / MANIFEST, {
        "format": FORMAT,
        "format_version": 3 if dtype == "int8" else 2,  # older versions (format ≤ 2) read float caches, and refuse int8 in one line
        "model_hash": digest,
        "encoder_hash": encoder_hash(model_dir),
        "title_tower_hash": title_tower_hash(model_dir),
        "model_dir": str(Path(model_dir).resolve()),
        "generation": generation,
        "generation_dir": name,
        "count": len(ids),
        "key": ["product_id"] + ([LOCALE_COLUMN] if locales is not None else []),
        "d_model": cfg.d_model,
        "vector_dim": int(getattr(clf.model_, "vector_dim", cfg.d_model)),
        "title_max_len": cfg.title_max_len,
        "matching": needs_tokens(clf),
        "dtype": dtype,
        **({"token_layout": UNPADDED} if needs_tokens(clf) else {}),
        "files": [IDS, VECTORS] + ([TOKENS, OFFSETS] if needs_tokens(clf) else [])
                 + ([VECTOR_SCALES] + ([TOKEN_SCALES] if needs_tokens(clf) else []) if dtype == "int8" else []),
        "library_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    _remove_other_generations(out, keep=name)
    return BuildReport(len(ids), len(ids) - kept, added, changed, removed, kept, time.perf_counter() - start, _size(out / name), str(out),
                       dtype=dtype)


# ------------------------------------------------------------------ helpers
@contextmanager
def _build_lock(out: Path):
    """One build at a time per cache directory (an advisory lock on ``out/.lock``)."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheError(f"{out}: another defectnas cache build is writing to it") from None
        yield


def _existing_dtype(out: Path) -> str | None:
    """The dtype the cache in ``out`` chose (format 2 on), or None (no cache, unreadable, or format 1,
    which had only float32 and is converted to the default)."""
    try:
        manifest = read_manifest(out)
        return _manifest_dtype(manifest, out) if manifest.get("format_version", 1) >= 2 else None
    except CacheError:
        return None


def _refuse_foreign(out: Path) -> None:
    """Only ever write into a new or empty directory, or a cache."""
    if not out.exists() or (out / MANIFEST).exists():
        return
    if not out.is_dir():
        raise CacheError(f"{out}: exists and is not a directory")
    if any(not p.name.startswith(".gen-") and p.name != LOCK for p in out.iterdir()):
        raise CacheError(f"{out}: is not empty and not a product cache; choose a new or empty --out directory")


def _previous(out: Path, digest: str, model_dir: str | Path, rebuild: bool) -> ProductCache | None:
    """The cache already in ``out`` to update, or None to build from scratch."""
    if not (out / MANIFEST).exists():
        return None
    if rebuild:
        try:
            read_manifest(out)  # only ever overwrite something that is a cache...
        except CacheError:
            if not _holds_only_cache_files(out):
                raise
            # ...or was one: its manifest unreadable (truncated, hand-edited) or of a newer format, nothing else in the directory
        return None
    cache = ProductCache(out)
    cache.check_model(digest, model_dir)
    return cache


def _next_generation(out: Path) -> int:
    """One past the manifest's generation and every generation directory on disk (a rebuild over an
    unreadable manifest still moves the number on, so a server watching the cache sees the change)."""
    try:
        current = int(read_manifest(out)["generation"])
    except (KeyError, TypeError, ValueError):  # CacheError (a ValueError): no readable manifest
        current = 0
    on_disk = [int(p.name[4:]) for p in out.iterdir() if p.is_dir() and GENERATION_DIR.fullmatch(p.name)] if out.is_dir() else []
    return max([current, *on_disk]) + 1


def _holds_only_cache_files(out: Path) -> bool:
    """Whether ``out`` holds nothing but what a cache writes: the manifest, the build lock, generation
    directories and leftovers of killed builds."""
    return all(p.name in (MANIFEST, LOCK) or (p.is_dir() and (GENERATION_DIR.fullmatch(p.name) or p.name.startswith(".gen-")))
               for p in out.iterdir())


class GenerationWriter:
    """The arrays of a new generation, written by rows in any order: vectors (N, V) and, for models
    that read title tokens, the unpadded token states (S, C) with their offsets (N + 1,).

    Each title's token count is known before encoding (its non-padding token ids), so the flat
    array is allocated once; :meth:`write` refuses (CacheError) an encoding whose mask is not that
    title's first ``length`` positions."""

    def __init__(self, directory: Path, clf, titles: list[str], dtype: str) -> None:
        cfg = clf.model_config_
        n, C, T = len(titles), cfg.d_model, cfg.title_max_len
        V = getattr(clf.model_, "vector_dim", C)  # pooled vector (+ the pre-trained sentence vector)
        self.vector = _open_rows(directory, VECTORS, VECTOR_SCALES, dtype, (n, V))
        self.tokens = None
        if needs_tokens(clf):
            lengths = np.concatenate([(clf.tokenizer_.encode(titles[i : i + 65536], T) != 0).sum(axis=1)
                                      for i in range(0, n, 65536)]).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
            self.lengths = lengths
            self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
            np.save(directory / OFFSETS, self.offsets, allow_pickle=False)
            self.tokens = _open_rows(directory, TOKENS, TOKEN_SCALES, dtype, (int(self.offsets[-1]), C))

    def write(self, rows: np.ndarray, enc: TitleArrays) -> None:
        """Store the encodings ``enc`` (vector (n, V); tokens (n, T, C) and mask (n, T), padded) of ``rows``."""
        self.vector[rows] = enc.vector
        if self.tokens is None:
            return
        rows = np.asarray(rows)
        mask, lengths = np.asarray(enc.mask), self.lengths[rows]
        expected = np.arange(mask.shape[1])[None, :] < lengths[:, None]  # each title's first `length` positions
        if (lengths > mask.shape[1]).any() or not np.array_equal(mask, expected):
            bad = int(rows[np.flatnonzero((mask != expected).any(axis=1) | (lengths > mask.shape[1]))[0]])
            raise CacheError(f"product row {bad}: the model's token mask is not its title's first {int(self.lengths[bad])} positions; "
                             "this model cannot be cached unpadded")
        for i, (start, length) in enumerate(zip(self.offsets[rows].tolist(), lengths.tolist())):
            self.tokens[start : start + length] = enc.tokens[i, :length]

    def close(self) -> None:
        for a in (self.vector, self.tokens):
            if a is not None:
                a.flush()
        self.vector = self.tokens = None


def _open_rows(directory: Path, name: str, scales_name: str, dtype: str, shape: tuple[int, int]):
    """A new (R, C) array file to write rows into: a memory map of ``dtype``, or for int8 the
    values and their per-row scales as :class:`Int8Rows`."""
    if dtype != "int8":
        return np.lib.format.open_memmap(directory / name, mode="w+", dtype=dtype, shape=shape)
    return Int8Rows(np.lib.format.open_memmap(directory / name, mode="w+", dtype=np.int8, shape=shape),
                    np.lib.format.open_memmap(directory / scales_name, mode="w+", dtype=np.float32, shape=shape[:1]))


def take_encodings(arrays: TitleArrays, rows: np.ndarray) -> TitleArrays:
    """Rows of the encodings as plain arrays, from memory maps (padded to T) or unpadded views (padded
    to the longest title of ``rows``) alike."""
    if isinstance(arrays.tokens, UnpaddedTokens):
        rows = np.asarray(rows, dtype=np.int64)
        return TitleArrays(np.asarray(arrays.vector[rows]), *arrays.tokens.take(rows))
    return TitleArrays(*(None if a is None else np.asarray(a[rows]) for a in arrays))


def _copy_kept(old: TitleArrays, new: GenerationWriter, old_rows: np.ndarray) -> None:
    """Copy unchanged products' encodings from the previous generation, a block at a time."""
    if old.vector.shape[1:] != new.vector.shape[1:] or (old.tokens is None) != (new.tokens is None) or (
            old.tokens is not None and old.tokens.shape[2] != new.tokens.shape[1]):
        raise CacheError("previous cache has other dimensions than the model; rebuild it with --rebuild")
    dest = np.flatnonzero(old_rows >= 0)
    for i in range(0, len(dest), _COPY_ROWS):
        d = dest[i : i + _COPY_ROWS]
        new.write(d, take_encodings(old, old_rows[d]))


def _encode_missing(clf, titles: list[str], old_rows: np.ndarray, writer: GenerationWriter, batch_size: int, quiet: bool) -> None:
    from ..progress import progress

    todo = np.flatnonzero(old_rows < 0)
    with torch.inference_mode(), progress(total=len(todo), quiet=quiet or not len(todo), unit="products", desc="encoding") as bar:
        for i in range(0, len(todo), batch_size):
            rows = todo[i : i + batch_size]
            writer.write(rows, encode_titles(clf, [titles[r] for r in rows], normalized=True))
            bar.update(len(rows))


def _encode_on_ray(address: str, actors: int, model_dir, titles: list[str], old_rows: np.ndarray, writer: GenerationWriter, batch_size: int,
                   quiet: bool, dtype: str) -> None:
    """As :func:`_encode_missing`, the batches encoded by Ray actors (:mod:`.ray_build`)."""
    from ..progress import progress

    from .ray_build import CHUNK_BATCHES, RayTitleEncoder

    todo = np.flatnonzero(old_rows < 0)
    if not len(todo):
        return
    step = batch_size * CHUNK_BATCHES  # whole batches per chunk: the batches of a local build
    chunks = ((todo[i : i + step], [titles[r] for r in todo[i : i + step]]) for i in range(0, len(todo), step))
    encoder = RayTitleEncoder(address, model_dir, actors)
    try:
        with progress(total=len(todo), quiet=quiet, unit="products", desc=f"encoding on Ray ({len(encoder.actors)} actors)") as bar:
            for rows, encoded in encoder.map(chunks, batch_size, dtype):
                writer.write(rows, TitleArrays(*encoded))
                bar.update(len(rows))
    finally:
        encoder.shutdown()


def _fsync_dir_files(directory: Path) -> None:
    for p in directory.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())


def _remove_other_generations(out: Path, keep: str) -> None:
    """Delete earlier generations and leftovers of killed builds (open memory maps stay valid)."""
    for p in out.iterdir():
        if p.is_dir() and p.name != keep and (p.name.startswith("gen-") or p.name.startswith(".gen-")):
            shutil.rmtree(p, ignore_errors=True)


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file()) if directory.is_dir() else 0


def _short(digest: str) -> str:
    return digest.split(":")[-1][:12]
