"""The product-encoding cache: build, scores, incremental update, refusal of another model's cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from defectnas import DefectClassifier
from defectnas.errors import DataWarning
from defectnas.serving import cache as cache_mod
from defectnas.serving.cache import CacheError, ProductCache, build_cache, model_hash
from defectnas.serving.catalog import read_catalog
from defectnas.serving.scorer import Scorer, UnknownProducts

from .conftest import CACHED_ATOL, catalog_frame


def _catalog(df: pd.DataFrame) -> pd.DataFrame:
    return read_catalog(df)[0]


@pytest.mark.parametrize("fixture,dtype", [("model_dir", "float16"), ("matching_model_dir", "float16"), ("matching_model_dir", "float32"),
                                           ("contextual_model_dir", "float16")])
def test_build_writes_manifest_and_mmap_arrays_that_score_like_predict_proba(fixture, dtype, request, tmp_path):
    model_dir = request.getfixturevalue(fixture)
    cat = _catalog(catalog_frame())
    report = build_cache(model_dir, cat, tmp_path / "c", batch_size=16, **({} if dtype == "float16" else {"dtype": dtype}))
    assert (report.count, report.encoded, report.added, report.kept) == (60, 60, 60, 0)

    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["model_hash"] == model_hash(model_dir) and manifest["count"] == 60
    cache = ProductCache(tmp_path / "c")
    clf = DefectClassifier.load(model_dir)
    assert isinstance(cache.arrays.vector.base, np.memmap) and cache.arrays.vector.shape == (60, clf.model_.vector_dim)
    assert manifest["dtype"] == cache.dtype == dtype and cache.arrays.vector.dtype == np.dtype(dtype)  # float16 by default
    assert clf.model_.vector_dim == (16 + 384 if clf.model_.backbone is not None else 16)  # + MiniLM's sentence vector
    if clf.model_config_.matching:
        assert cache.arrays.tokens.shape == (60, clf.model_config_.title_max_len, 16) and cache.arrays.mask.dtype == bool
    else:
        assert cache.arrays.tokens is None and not (tmp_path / "c" / manifest["generation_dir"] / "tokens.npy").exists()

    scorer = Scorer(clf, cache)
    ids = ["p5", "p0", "p59", "p5"]
    titles = cat.set_index("product_id").loc[ids, "title"].tolist()
    expected = clf.predict_proba(["drill bit"] * 4, titles)
    np.testing.assert_allclose(scorer.score_ids("Drill  Bit", ids), expected, atol=1e-5 if dtype == "float32" else CACHED_ATOL, rtol=0)
    np.testing.assert_allclose(scorer.score_titles("drill bit", titles), expected, atol=1e-5, rtol=0)
    with pytest.raises(UnknownProducts) as e:
        scorer.score_ids("x", ["p1", "nope", "nope"])
    assert e.value.ids == ["nope"]


def test_incremental_update_encodes_only_new_and_changed(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "c"
    full = catalog_frame()
    build_cache(model_dir, _catalog(full), out)
    before = ProductCache(out)
    old_vectors = {pid: np.array(before.arrays.vector[row]) for pid, row in before.index.items()}
    first_gen = before.manifest["generation_dir"]

    updated = full[full["product_id"] != "p3"].copy()  # p3 removed
    updated.loc[updated["product_id"] == "p7", "title"] = "Garden Hose Reel"  # p7 changed
    updated = pd.concat([updated, pd.DataFrame({"product_id": ["new1"], "title": ["Paint Brush Set"]})])
    encoded: list[str] = []
    real = cache_mod.encode_titles
    monkeypatch.setattr(cache_mod, "encode_titles", lambda clf, titles, normalized=False: encoded.extend(titles) or real(clf, titles, normalized))
    report = build_cache(model_dir, _catalog(updated), out)
    assert (report.added, report.changed, report.removed, report.kept, report.encoded) == (1, 1, 1, 58, 2)
    assert sorted(encoded) == ["garden hose reel", "paint brush set"]

    after = ProductCache(out)
    assert len(after) == 60 and "p3" not in after.index and after.manifest["generation"] == 2
    assert not (out / first_gen).exists()  # the previous generation is gone
    for pid in ("p0", "p10", "p59"):
        np.testing.assert_array_equal(after.arrays.vector[after.index[pid]], old_vectors[pid])
    clf = DefectClassifier.load(model_dir)
    expected = clf.predict_proba(["hose"] * 2, ["Garden Hose Reel", "Paint Brush Set"])
    np.testing.assert_allclose(Scorer(clf, after).score_ids("hose", ["p7", "new1"]), expected, atol=CACHED_ATOL, rtol=0)

    encoded.clear()
    report = build_cache(model_dir, _catalog(updated), out)  # nothing changed: nothing written
    assert report.encoded == 0 and encoded == [] and ProductCache(out).manifest["generation"] == 2


def test_cache_of_another_model_is_refused_unless_rebuilt(model_dir, other_model_dir, tmp_path):
    out = tmp_path / "c"
    build_cache(model_dir, _catalog(catalog_frame(10)), out)
    with pytest.raises(CacheError, match="built by another model"):
        build_cache(other_model_dir, _catalog(catalog_frame(10)), out)
    with pytest.raises(CacheError, match="built by another model"):
        Scorer.load(other_model_dir, out)
    report = build_cache(other_model_dir, _catalog(catalog_frame(10)), out, rebuild=True)
    assert report.encoded == 10 and ProductCache(out).model_hash == model_hash(other_model_dir)


def test_a_failed_build_leaves_the_previous_cache_intact(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "c"
    build_cache(model_dir, _catalog(catalog_frame(10)), out)
    manifest = (out / "manifest.json").read_text()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "encode_titles", boom)
    with pytest.raises(KeyboardInterrupt):
        build_cache(model_dir, _catalog(catalog_frame(20)), out)
    assert (out / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["gen-000001", "manifest.json"]
    assert len(ProductCache(out)) == 10


def test_refuses_foreign_directories_and_broken_caches(model_dir, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match="not empty and not a product cache"):
        build_cache(model_dir, _catalog(catalog_frame(5)), tmp_path / "x")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["notes.txt"]  # left as it was
    with pytest.raises(CacheError, match="not a product cache"):
        ProductCache(tmp_path / "x")
    build_cache(model_dir, _catalog(catalog_frame(5)), tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    (tmp_path / "c" / manifest["generation_dir"] / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(CacheError, match="unreadable"):
        ProductCache(tmp_path / "c")


def test_build_reads_a_catalogue_file_or_any_frame(model_dir, catalog_csv, tmp_path):
    report = build_cache(model_dir, catalog_csv, tmp_path / "a")
    assert report.count == 60
    raw = pd.DataFrame({"product_uid": [1, 2, 2], "product_title": ["Garden  HOSE", "Rug", "Rug"], "search_term": ["a", "b", "c"]})
    build_cache(model_dir, raw, tmp_path / "b")
    cache = ProductCache(tmp_path / "b")
    assert cache.ids == ["1", "2"]
    clf = DefectClassifier.load(model_dir)
    np.testing.assert_allclose(Scorer(clf, cache).score_ids("hose", ["1"]), clf.predict_proba(["hose"], ["garden hose"]), atol=CACHED_ATOL, rtol=0)


def test_one_build_at_a_time(model_dir, tmp_path):
    import fcntl

    out = tmp_path / "c"
    build_cache(model_dir, _catalog(catalog_frame(5)), out)
    with open(out / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running build holds it
        with pytest.raises(CacheError, match="another defectnas cache build"):
            build_cache(model_dir, _catalog(catalog_frame(6)), out)
    assert build_cache(model_dir, _catalog(catalog_frame(6)), out).added == 1


def _as_format_1(out) -> None:
    """Rewrite a float32 cache as defectnas wrote caches before format 2: padded token states (N, T, C) and mask.npy."""
    cache = ProductCache(out)
    gen = out / cache.manifest["generation_dir"]
    tokens, mask = np.asarray(cache.arrays.tokens), np.asarray(cache.arrays.mask)
    del cache
    np.save(gen / "tokens.npy", tokens)
    np.save(gen / "mask.npy", mask)
    (gen / "offsets.npy").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("token_layout")
    manifest.update(format_version=1, files=["ids.json", "vectors.npy", "tokens.npy", "mask.npy"])
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_a_float32_padded_cache_of_an_earlier_version_still_serves_and_an_update_converts_it_without_re_encoding(
        matching_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "c"
    build_cache(matching_model_dir, _catalog(catalog_frame(10)), out, dtype="float32")
    _as_format_1(out)
    old = ProductCache(out)
    assert old.dtype == "float32" and old.arrays.tokens.dtype == np.float32 and isinstance(old.arrays.tokens.base, np.memmap)
    clf = DefectClassifier.load(matching_model_dir)
    exact = Scorer(clf, old).score_ids("drill", ["p0", "p9"])
    np.testing.assert_allclose(exact, clf.predict_proba(["drill"] * 2, _catalog(catalog_frame(10))["title"].iloc[[0, 9]].tolist()), atol=1e-5, rtol=0)

    monkeypatch.setattr(cache_mod, "encode_titles", lambda *a, **k: pytest.fail("a conversion re-encoded titles"))
    report = build_cache(matching_model_dir, _catalog(catalog_frame(10)), out)  # the default: float16, tokens unpadded
    new = ProductCache(out)
    assert (report.kept, report.encoded, new.dtype, new.generation) == (10, 0, "float16", old.generation + 1)
    assert new.manifest["format_version"] == 2 and not (out / new.manifest["generation_dir"] / "mask.npy").exists()
    padded = np.asarray(old.arrays.tokens).astype(np.float16)
    np.testing.assert_array_equal(new.arrays.tokens, padded)  # read back as the padded array it stands for
    np.testing.assert_array_equal(new.arrays.tokens[[3, 1, 3], :5], padded[[3, 1, 3], :5])
    np.testing.assert_array_equal(new.arrays.tokens[2], padded[2])
    np.testing.assert_array_equal(new.arrays.mask[[0, 9]], np.asarray(old.arrays.mask)[[0, 9]])
    lengths = np.asarray(old.arrays.mask).sum(axis=1)
    assert new.bytes_per_product < (new.arrays.vector.shape[1] + lengths.mean() * padded.shape[2]) * 2 + 8 + 1  # only the real tokens
    assert new.bytes_per_product < 0.5 * old.bytes_per_product
    np.testing.assert_allclose(Scorer(clf, new).score_ids("drill", ["p0", "p9"]), exact, atol=CACHED_ATOL, rtol=0)


def test_a_cache_from_a_newer_format_is_refused_in_one_line(model_dir, tmp_path):
    build_cache(model_dir, _catalog(catalog_frame(5)), tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    (tmp_path / "c" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(CacheError, match="newer defectnas"):
        ProductCache(tmp_path / "c")


@pytest.mark.parametrize("damage", ["truncated", "not_json_object", "other_format", "newer_format", "empty_file", "dtype_missing",
                                    "dtype_of_other_arrays", "dtype_unknown"])
def test_a_cache_with_a_broken_manifest_is_refused_in_one_line_and_rebuild_recovers_it(model_dir, tmp_path, damage):
    out = tmp_path / "c"
    build_cache(model_dir, _catalog(catalog_frame(5)), out)
    text = (out / "manifest.json").read_text()
    manifest = json.loads(text)
    broken = {"truncated": text[: len(text) // 2], "not_json_object": "[1, 2]", "empty_file": "",
              "other_format": json.dumps({**manifest, "format": "something-else"}),
              "newer_format": json.dumps({**manifest, "format_version": 99}),
              "dtype_missing": json.dumps({k: v for k, v in manifest.items() if k != "dtype"}),
              "dtype_of_other_arrays": json.dumps({**manifest, "dtype": "int8"}),  # float16 arrays read as int8 rows: wrong scores
              "dtype_unknown": json.dumps({**manifest, "dtype": "bfloat16"})}[damage]
    (out / "manifest.json").write_text(broken)
    with pytest.raises(CacheError) as refused:
        ProductCache(out)
    said = str(refused.value)
    assert "\n" not in said and ("--rebuild" in said or "rebuild it" in said) and "unreadable (CacheError" not in said
    if damage.startswith("dtype"):
        assert "dtype" in said
    report = build_cache(model_dir, _catalog(catalog_frame(5)), out, rebuild=True)
    assert report.count == 5 and report.encoded == 5
    again = ProductCache(out)
    assert again.manifest["generation"] == 2 and again.manifest["generation_dir"] == "gen-000002"  # moved on past gen-000001 on disk
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["gen-000002"]
    np.testing.assert_allclose(Scorer(DefectClassifier.load(model_dir), again).score_ids("drill", ["p0", "p4"]),
                               DefectClassifier.load(model_dir).predict_proba(["drill"] * 2, _catalog(catalog_frame(5))["title"].iloc[[0, 4]].tolist()),
                               atol=CACHED_ATOL, rtol=0)


def test_rebuild_over_a_broken_manifest_still_refuses_a_directory_holding_other_files(model_dir, tmp_path):
    out = tmp_path / "c"
    build_cache(model_dir, _catalog(catalog_frame(5)), out)
    (out / "manifest.json").write_text("{")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match="unreadable"):
        build_cache(model_dir, _catalog(catalog_frame(5)), out, rebuild=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "gen-000001").is_dir()  # nothing touched


def test_int8_rows_round_trip_within_half_a_step_and_requantize_to_the_same_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16)).astype(np.float32) * rng.uniform(0.01, 10, size=(50, 1)).astype(np.float32)
    x[7] = 0.0  # an all-zero row
    rows = cache_mod.Int8Rows(np.zeros((50, 16), np.int8), np.zeros(50, np.float32))
    rows[np.arange(50)] = x
    back = rows[np.arange(50)]
    assert back.dtype == np.float32 and rows.nbytes == 50 * 16 + 50 * 4
    step = np.abs(x).max(axis=1) / 127
    assert (np.abs(back - x) <= step[:, None] / 2 + 1e-6).all() and (back[7] == 0).all()
    again = cache_mod.Int8Rows(np.zeros((50, 16), np.int8), np.zeros(50, np.float32))
    again[slice(0, 50)] = back  # an update copies kept rows by reading and writing them: nothing drifts
    np.testing.assert_array_equal(again.values, rows.values)
    np.testing.assert_allclose(again.scales, rows.scales, rtol=1e-6)
    np.testing.assert_array_equal(rows[3], back[3])


def test_an_int8_cache_stores_a_byte_per_value_scores_near_float32_and_updates_without_drift(matching_model_dir, tmp_path, monkeypatch):
    cat = _catalog(catalog_frame())
    build_cache(matching_model_dir, cat, tmp_path / "f32", dtype="float32")
    build_cache(matching_model_dir, cat, tmp_path / "f16")
    report = build_cache(matching_model_dir, cat, tmp_path / "i8", dtype="int8")
    f32, f16, i8 = (ProductCache(tmp_path / n) for n in ("f32", "f16", "i8"))
    gen = tmp_path / "i8" / i8.manifest["generation_dir"]
    assert (report.encoded, i8.dtype, i8.manifest["format_version"]) == (60, "int8", 3)
    assert np.load(gen / "vectors.npy", mmap_mode="r").dtype == np.int8 and (gen / "token_scales.npy").exists()
    (N, V), (S, C) = i8.arrays.vector.shape, i8.arrays.tokens.flat.shape
    assert i8.bytes_per_product * N == pytest.approx(N * (V + 4) + S * (C + 4) + 8 * (N + 1))  # a byte per value + a float32 scale per row
    assert f16.bytes_per_product * N == pytest.approx(N * V * 2 + S * C * 2 + 8 * (N + 1))
    vec32 = np.asarray(f32.arrays.vector)
    assert (np.abs(np.asarray(i8.arrays.vector) - vec32) <= np.abs(vec32).max(axis=1, keepdims=True) / 254 + 1e-6).all()
    np.testing.assert_array_equal(i8.arrays.mask, np.asarray(f32.arrays.mask))
    clf = DefectClassifier.load(matching_model_dir)
    ids = ["p5", "p0", "p59", "p31"]
    exact = Scorer(clf, f32).score_ids("drill bit", ids)
    np.testing.assert_allclose(Scorer(clf, i8).score_ids("drill bit", ids), exact, atol=2e-2, rtol=0)

    # an update keeps the stored int8 values of unchanged products exactly and encodes only the new one
    values = np.asarray(i8.arrays.tokens.flat.values).copy()
    bigger = _catalog(pd.concat([catalog_frame(), pd.DataFrame({"product_id": ["new"], "title": ["brand new garden hose"]})]))
    report = build_cache(matching_model_dir, bigger, tmp_path / "i8", dtype="int8")
    again = ProductCache(tmp_path / "i8")
    assert (report.kept, report.encoded) == (60, 1)
    np.testing.assert_array_equal(np.asarray(again.arrays.tokens.flat.values)[: len(values)], values)
    # an update without a dtype keeps the cache's own (int8), not the float16 of a new cache
    report = build_cache(matching_model_dir, cat, tmp_path / "i8")
    assert (report.dtype, report.kept, report.encoded, ProductCache(tmp_path / "i8").dtype) == ("int8", 60, 0, "int8")
    # float16 → int8 converts the kept rows without re-encoding; int8 → float16 says its values keep int8's rounding
    monkeypatch.setattr(cache_mod, "encode_titles", lambda *a, **k: pytest.fail("a conversion re-encoded titles"))
    assert build_cache(matching_model_dir, cat, tmp_path / "f16", dtype="int8").encoded == 0 and ProductCache(tmp_path / "f16").dtype == "int8"
    with pytest.warns(DataWarning, match="keep int8's rounding"):
        assert build_cache(matching_model_dir, cat, tmp_path / "f16", dtype="float16").dtype == "float16"
    assert build_cache(matching_model_dir, cat, tmp_path / "f16").dtype == "float16"  # and stays float16 on the next update
    monkeypatch.undo()
    assert build_cache(matching_model_dir, cat, tmp_path / "i8", rebuild=True).dtype == "int8"  # a rebuild keeps it too
    monkeypatch.setattr(cache_mod, "FORMAT_VERSION", 2)
    with pytest.raises(CacheError, match="newer defectnas"):
        ProductCache(tmp_path / "i8")


@pytest.mark.parametrize("start, to, warned", [("float16", "float32", True), ("int8", "float32", True), ("int8", "float16", True),
                                               ("float32", "float16", False), ("float16", "int8", False), ("float32", "int8", False)])
def test_a_conversion_to_a_wider_dtype_says_it_keeps_the_narrower_rounding(model_dir, tmp_path, start, to, warned):
    """float16 → float32 kept float16's rounding without a word, though float32 is the exact dtype;
    every widening says so in one line (pointing at --rebuild), a narrowing has nothing to say."""
    import warnings

    cat = _catalog(catalog_frame(6))
    build_cache(model_dir, cat, tmp_path / "c", dtype=start)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build_cache(model_dir, cat, tmp_path / "c", dtype=to).encoded == 0
    lines = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    if warned:
        assert lines == [f"{tmp_path / 'c'}: the values of 6 kept products, converted from {start} to {to}, keep {start}'s rounding "
                         "(nothing is re-encoded); pass --rebuild to encode them anew"]
    else:
        assert lines == []
