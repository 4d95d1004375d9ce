"""`defectnas cache --ray-address`: titles encoded by Ray actors give the cache a local build writes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from defectnas.cli import main
from defectnas.serving.cache import ProductCache, build_cache
from defectnas.serving.catalog import read_catalog

from .conftest import catalog_frame


@pytest.mark.xdist_group("ray")  # one worker runs the Ray tests in turn (pyproject: --dist loadgroup)
def test_a_cache_built_on_ray_equals_the_local_build(matching_model_dir, tmp_path, capsys):
    """Ray is part of the test install: this runs, it does not skip."""
    import ray

    catalog = read_catalog(catalog_frame(60))[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray actor runs
    try:
        build_cache(matching_model_dir, catalog, tmp_path / "local", batch_size=4, dtype="float32")
        build_cache(matching_model_dir, catalog, tmp_path / "local8", batch_size=4, dtype="int8")
    finally:
        torch.set_num_threads(threads)
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    leftovers = lambda: set(Path(tempfile.gettempdir()).glob("defectnas-model-*"))  # noqa: E731
    before = leftovers()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:  # 60 titles in batches of 4, chunks of 16: four chunks over two actors
        assert main(["cache", "--model", str(matching_model_dir), "--catalog", str(tmp_path / "catalog.csv"), "--out", str(tmp_path / "ray"),
                     "--batch-size", "4", "--dtype", "float32", "--ray-address", "auto"]) == 0
        # int8: the actors send float32, the driver quantizes as a local build does
        assert main(["cache", "--model", str(matching_model_dir), "--catalog", str(tmp_path / "catalog.csv"), "--out", str(tmp_path / "ray8"),
                     "--batch-size", "4", "--dtype", "int8", "--ray-address", "auto", "--quiet"]) == 0
    finally:
        ray.shutdown()
    assert "60 products (60 added" in capsys.readouterr().err
    assert leftovers() <= before  # each actor's copy of the model files is removed once loaded (Ray kills actors: no cleanup)
    local, remote = ProductCache(tmp_path / "local"), ProductCache(tmp_path / "ray")
    assert remote.ids == local.ids and remote.title_hashes == local.title_hashes
    for a, b in zip(local.arrays, remote.arrays):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    manifest = lambda d: {k: v for k, v in json.loads((d / "manifest.json").read_text()).items() if k != "created"}  # noqa: E731
    assert manifest(tmp_path / "ray") == manifest(tmp_path / "local")
    local8, remote8 = ProductCache(tmp_path / "local8"), ProductCache(tmp_path / "ray8")
    assert remote8.dtype == local8.dtype == "int8"
    np.testing.assert_array_equal(remote8.arrays.vector.values, local8.arrays.vector.values)
    np.testing.assert_array_equal(remote8.arrays.tokens.flat.values, local8.arrays.tokens.flat.values)
    np.testing.assert_array_equal(remote8.arrays.tokens.flat.scales, local8.arrays.tokens.flat.scales)


def test_an_unreachable_ray_address_is_one_line_and_exit_2(model_dir, catalog_csv, tmp_path, capsys):
    assert main(["cache", "--model", str(model_dir), "--catalog", str(catalog_csv), "--out", str(tmp_path / "c"),
                 "--ray-address", "127.0.0.1:1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--ray-address 127.0.0.1:1" in err and "\n" not in err
    assert not (tmp_path / "c" / "manifest.json").exists()
