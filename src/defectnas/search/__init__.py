"""Architecture search: dl-rl / dl-rl-ml (the paper's ``seed`` space) and the ``serving`` space.

Why a package: the search has a few separate concepts, one module each —
``space`` (registered spaces; architectures are plain JSON and ``to_options`` builds them),
``controller`` (the LSTM policy), ``reinforce`` (how it learns from rewards, and its checkpoint),
``strategies`` (rl, random, regularized evolution), ``child`` (train one architecture under K
seeds, score AP, time it as served), ``executors`` (where children run: here, local processes,
Ray), ``trials`` (the durable trial log and architecture cache), ``runner`` (the noise floor and
the resumable loop), ``final`` (fresh-seed retrains, the Pareto front under ``pareto/<n>/``,
``best/``, the paired test against the default, from :mod:`defectnas.training.significance`), ``stats``
(ICC) and ``plots``.

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
