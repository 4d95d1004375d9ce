"""Word-piece tokenization with Hugging Face ``tokenizers``, saved in the model directory.

Why WordPiece: product titles are full of model numbers, sizes and brand names that a word
vocabulary would map to "unknown"; word pieces keep them. Either a vocabulary is trained on the
training split (small data, small table), or all-MiniLM-L6-v2's vocabulary is reused so its
pre-trained embeddings can initialise ours. The tokenizer's own ``tokenizer.json`` travels with
the model, so loading never needs the training data or the pre-trained package.

Marks that change a word are kept. A vocabulary trained here never strips accents ("año" and
"ano" stay apart). A pre-trained vocabulary built with accent stripping (uncased BERT, the
bundled MiniLM) has no accented Latin letters, so for it only the combining diacritics of
Latin, Greek and Cyrillic letters (U+0300–U+036F) are removed, as its vocabulary was built;
every other mark — the Japanese voiced-sound marks above all (パンダ/ハンダ, バッグ/ハック) — is
kept, where Hugging Face's BertNormalizer would remove every combining mark. A word the
vocabulary then cannot spell becomes one unknown piece, which :meth:`TextTokenizer.unknown_share`
counts so ``defectnas data`` and ``train`` can say so.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import json

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] must be id 0
FILENAME = "tokenizer.json"
MAX_PIECE = 12  # longest word start / ending considered as a vocabulary piece
KANA = "[\u3040-\u30ff]"  # Hiragana and Katakana (with the voiced-sound marks U+3099/U+309A)
LATIN_MARKS = "[\u0300-\u036f]"  # Combining Diacritical Marks: the accents of Latin, Greek and Cyrillic letters
NO_PIECES, ONLY_UNKNOWN = "no word pieces", "only unknown word pieces"  # text problems (see problems())
MEMO_LIMIT = 200_000  # texts a remembering tokenizer keeps (int32 ids: ~300 bytes a text with its key, ~60 MB at most; the Home Depot sample: 48,601 texts)
_PRETRAINED: dict[tuple, "TextTokenizer"] = {}  # from_pretrained's instances, by (file, mtime, size)


def keep_marks_normalizer(lowercase: bool = True, strip_latin_accents: bool = False) -> normalizers.Normalizer:
    """BERT's normaliser (clean text, space out CJK ideographs, optionally lower-case) that never
    strips a mark, or (``strip_latin_accents``) strips only Latin/Greek/Cyrillic diacritics."""
    bert = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase)
    if not strip_latin_accents:
        return bert
    # NFD as BERT's accent stripping does (the vocabulary was built on NFD text), then only Latin marks go
    return normalizers.Sequence([bert, normalizers.NFD(), normalizers.Replace(Regex(LATIN_MARKS), "")])


class TextTokenizer:
    """Turns texts into fixed-length id arrays (0 = padding)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        tokenizer.post_processor = None  # no [CLS]/[SEP]: the encoders pool tokens themselves
        tokenizer.no_padding()
        tokenizer.no_truncation()
        if tokenizer.token_to_id("[PAD]") != 0:
            raise ValueError("the tokenizer's [PAD] token must have id 0")
        self._tok = tokenizer
        self.unk_id = tokenizer.token_to_id("[UNK]") or 0
        self._memo: dict[str, np.ndarray] | None = None  # text → word-piece ids, int32 (see remember())
        self._last_single: tuple[str, list[int]] | None = None  # the last text tokenised alone, and its ids

    def remember(self, limit: int = MEMO_LIMIT) -> "TextTokenizer":
        """Keep each text's word pieces (up to ``limit`` texts, then stop adding): ``problems``,
        ``unknown_counts`` and ``encode`` then tokenise a text once, not once per call.

        Why: ``fit`` reads every training and validation text three times (screening, the
        vocabulary-coverage report, encoding), and a search's children fit the same texts again
        and again (tokenising took 2.4 s of a 13-s child in one profile). The pre-trained tokenizer of one
        checkpoint is shared by the fits of a process (:meth:`from_pretrained`) with this on.
        Exact: a tokenizer is a pure function of the text. Not pickled (Ray tasks get it empty)."""
        self._memo, self._memo_limit = {}, limit
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_memo"] = {} if state.get("_memo") is not None else None
        return state

    def _pieces(self, texts: Sequence[str]) -> list:
        """Each text's word-piece ids (no special tokens; a list, or an int32 array from the memo)."""
        texts = list(texts)
        memo = self._memo
        if memo is None and len(texts) == 1:  # a served request checks its query, then encodes it: tokenised once
            last = getattr(self, "_last_single", None)
            if last is not None and last[0] == texts[0]:
                return [last[1]]
            ids = self._tok.encode(texts[0], add_special_tokens=False).ids
            self._last_single = (texts[0], ids)  # one tuple assignment: safe across the server's threads
            return [ids]
        if memo is None:
            return [enc.ids for enc in self._tok.encode_batch(texts, add_special_tokens=False)]
        out = [memo.get(t) for t in texts]
        todo = [i for i, ids in enumerate(out) if ids is None]
        if todo:
            missing = list(dict.fromkeys(texts[i] for i in todo))
            found = {t: np.asarray(enc.ids, dtype=np.int32) for t, enc in zip(missing, self._tok.encode_batch(missing, add_special_tokens=False))}
            for i in todo:
                out[i] = found[texts[i]]
            if len(memo) + len(found) <= self._memo_limit:
                memo.update(found)
        return out

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> "TextTokenizer":
        """Learn a WordPiece vocabulary from (training) texts, deterministically.

        Hugging Face's WordPiece trainer breaks ties in hash-map order, so the same texts give
        a different vocabulary on every run (huggingface/tokenizers#1794), and with it a
        different model for the same seed and a checkpoint that no longer matches its ids. The
        vocabulary is therefore chosen here — the alphabet, then whole words and word pieces
        ranked by how many characters they cover (count × (length − 1)), ties by spelling —
        and handed to the library's own WordPiece model, normaliser and pre-tokeniser.
        """
        normalizer = keep_marks_normalizer(lowercase=True)
        pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        words: Counter[str] = Counter()
        for text in texts:
            words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
        alphabet = sorted({c for w in words for c in w})
        vocab = SPECIAL_TOKENS + alphabet + ["##" + c for c in alphabet]
        scores: Counter[str] = Counter()
        for word, count in words.items():
            if count < min_frequency or len(word) < 2:
                continue
            scores[word] += count * (len(word) - 1)
            for i in range(2, min(len(word), MAX_PIECE)):  # word starts: "dri", "dril"
                scores[word[:i]] += count * (i - 1)
            for i in range(max(1, len(word) - MAX_PIECE), len(word) - 1):  # word endings: "##ing"
                scores["##" + word[i:]] += count * (len(word) - i - 1)
        seen = set(vocab)
        for piece, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(vocab) >= vocab_size:
                break
            if piece not in seen:
                vocab.append(piece)
                seen.add(piece)
        tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizer
        tok.decoder = decoders.WordPiece()
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | Path) -> "TextTokenizer":
        return cls(Tokenizer.from_file(str(path)))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "TextTokenizer":
        """A pre-trained checkpoint's ``tokenizer.json`` for a new model, its accent stripping
        narrowed to Latin/Greek/Cyrillic diacritics (see the module docstring); a cased
        (non-stripping) checkpoint keeps its normaliser as it is. One instance per file (and
        version of it) per process, remembering what it tokenised (:meth:`remember`)."""
        path = Path(path).resolve()
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in _PRETRAINED:
            _PRETRAINED[key] = cls._from_pretrained(path).remember()
        return _PRETRAINED[key]

    @classmethod
    def _from_pretrained(cls, path: Path) -> "TextTokenizer":
        tok = Tokenizer.from_file(str(path))
        spec = json.loads(tok.to_str()).get("normalizer") or {}
        if spec.get("type") == "BertNormalizer":
            strips = spec.get("strip_accents")
            lowercase = bool(spec.get("lowercase", True))
            strips = lowercase if strips is None else bool(strips)  # BERT: unset follows lowercase
            if strips:
                tok.normalizer = keep_marks_normalizer(lowercase=lowercase, strip_latin_accents=True)
                tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(KANA), "isolated"), tok.pre_tokenizer])
        return cls(tok)

    @classmethod
    def load(cls, directory: str | Path) -> "TextTokenizer":
        return cls.from_file(Path(directory) / FILENAME)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FILENAME
        tmp = path.with_name(path.name + ".tmp")
        self._tok.save(str(tmp))
        tmp.replace(path)
        return path

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def token_id(self, token: str) -> int:
        """Id of a vocabulary entry such as "[CLS]"."""
        i = self._tok.token_to_id(token)
        if i is None:
            raise KeyError(f"{token!r} is not in the vocabulary")
        return i

    def tokens(self, text: str) -> list[str]:
        return self._tok.encode(text).tokens

    def problems(self, texts: Sequence[str]) -> list[str]:
        """Per text: "" when the model sees something, else NO_PIECES (nothing left once
        normalised and tokenised) or ONLY_UNKNOWN (every piece is the unknown token)."""
        out = []
        for ids in self._pieces(texts):
            out.append(NO_PIECES if len(ids) == 0 else ONLY_UNKNOWN if all(i == self.unk_id for i in ids) else "")
        return out

    def unknown_counts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(pieces, unknown pieces) per text, as int64 arrays."""
        pieces = np.zeros(len(texts), dtype=np.int64)
        unknown = np.zeros(len(texts), dtype=np.int64)
        for i, ids in enumerate(self._pieces(texts)):
            pieces[i] = len(ids)
            unknown[i] = sum(1 for t in ids if t == self.unk_id)
        return pieces, unknown

    def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
        """(N, max_len) int64 ids, truncated and right-padded with 0; never an all-padding row."""
        out = np.zeros((len(texts), max_len), dtype=np.int64)
        for i, ids in enumerate(self._pieces(texts)):
            ids = ids[:max_len]
            if len(ids) == 0:
                ids = [self.unk_id]  # an empty row would give attention nothing to attend to
            out[i, : len(ids)] = ids
        return out


def trim_padding(ids: np.ndarray) -> np.ndarray:
    """Drop padding columns that every row of the batch has (ids are right-padded with 0).

    Exact: positions are absolute and padding is masked everywhere, so a shorter batch gives
    the same outputs, faster.
    """
    if ids.ndim != 2 or ids.shape[1] == 0:
        return ids
    used = np.flatnonzero((ids != 0).any(axis=0))
    return ids[:, : (used[-1] + 1 if len(used) else 1)]
