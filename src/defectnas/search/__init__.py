"""Reinforcement-learning architecture search for the product (title) encoder: dl-rl, dl-rl-ml.

Why a package: the search has a few separate concepts, one module each —
``space`` (which architectures exist; plain JSON genotypes), ``controller`` (the LSTM policy
that samples them), ``reinforce`` (how it learns from rewards, and its checkpoint), ``child``
(train and time one architecture), ``executors`` (where children run: here, local processes,
Ray), ``trials`` (the durable trial log and architecture cache), ``runner`` (the resumable
loop), ``final`` (retrain the top-k, save ``best/``) and ``plots``. Only the title encoder is
searched: the query encoder runs online for every request and stays fixed.

Torch is imported by the submodules, so ``import defectnas.search`` stays cheap until used.
"""

from __future__ import annotations

__all__ = ["Controller", "Reinforce", "SearchConfig", "SearchResult", "SearchSpace", "run_search"]


def __getattr__(name: str):
    if name == "SearchSpace":
        from .space import SearchSpace

        return SearchSpace
    if name == "Controller":
        from .controller import Controller

        return Controller
    if name == "Reinforce":
        from .reinforce import Reinforce

        return Reinforce
    if name == "SearchConfig":
        from .config import SearchConfig

        return SearchConfig
    if name in ("run_search", "SearchResult"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'defectnas.search' has no attribute {name!r}")
