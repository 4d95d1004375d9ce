"""The search space: which product-encoder architectures the controller may choose.

Why a module of its own: an architecture is plain data (a genotype, as in DARTS/ENAS), kept
apart from the code that samples it (the controller) and the code that builds it
(:class:`~defectnas.model.cell.Cell` via ``DefectClassifier(title_layers=...)``). The same
builder makes search children and final models, so a searched architecture is trained later
exactly as it was during the search.

Per title-encoder layer there are three decisions:

- ``mixer``: multi-head attention with 1, 4 or 8 heads, or a GLU instead of attention
  (one 4-way decision, so a GLU layer has no meaningless "heads" choice and the cache sees one
  architecture where there is one model);
- ``ffn``: the feed-forward block, a 1×1 conv, or a 3×1 / 5×1 depthwise-separable conv;
- ``ratio``: feed-forward inner width 4, 8 or 16 × d_model.

The mixer and ffn options are read off the op registries in :mod:`defectnas.model.ops`, so a
newly registered op joins the space. Only the product (title) encoder is searched: the query
encoder runs online for every request and stays fixed.

An architecture is a list of dicts, one per layer, e.g.
``[{"mixer": "glu", "heads": 1, "ffn": "sepconv3", "ratio": 8}, ...]``; it is what
``trials.jsonl`` and ``top_k.json`` store and what ``title_layers`` accepts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..config import LayerSpec
from ..errors import ConfigError
from ..model.ops import FFNS, MIXERS

HEADED_MIXERS = ("attention",)  # mixers whose head count is a choice
Architecture = list[dict[str, Any]]


@dataclass(frozen=True)
class Decision:
    """One categorical choice the controller makes: which layer, which field, which options."""

    layer: int  # title-encoder layer index
    kind: str  # "mixer", "ffn" or "ratio"
    options: tuple  # the values to choose from (mixer options are (name, heads) pairs)


@dataclass
class SearchSpace:
    """Per layer: a token mixer (with its head count), a feed-forward op and its ratio."""

    num_layers: int = 5  # title-encoder layers
    heads: tuple[int, ...] = (1, 4, 8)  # head counts offered for attention
    ratios: tuple[int, ...] = (4, 8, 16)  # feed-forward ratios offered
    mixers: tuple[str, ...] = field(default_factory=lambda: tuple(MIXERS.names()))  # token mixers offered
    ffns: tuple[str, ...] = field(default_factory=lambda: tuple(FFNS.names()))  # feed-forward ops offered

    def __post_init__(self) -> None:
        self.heads, self.ratios = tuple(self.heads), tuple(self.ratios)
        self.mixers, self.ffns = tuple(self.mixers), tuple(self.ffns)
        for name in self.mixers:
            MIXERS.get(name)  # raises with the valid names on a typo
        for name in self.ffns:
            FFNS.get(name)
        if self.num_layers < 1 or not (self.heads and self.ratios and self.mixers and self.ffns):
            raise ConfigError("a search space needs at least one layer and one option per choice")

    # ------------------------------------------------------------------ shape
    @property
    def mixer_options(self) -> tuple[tuple[str, int], ...]:
        """(name, heads) pairs: one per head count for attention, one (heads=1) for the others."""
        out = []
        for name in self.mixers:
            out += [(name, h) for h in self.heads] if name in HEADED_MIXERS else [(name, 1)]
        return tuple(out)

    @property
    def kinds(self) -> dict[str, tuple]:
        """The options of each decision kind, in the order they are decided within a layer."""
        return {"mixer": self.mixer_options, "ffn": self.ffns, "ratio": self.ratios}

    @property
    def decisions(self) -> list[Decision]:
        """Every decision, in the order the controller makes them (layer by layer)."""
        return [Decision(i, kind, opts) for i in range(self.num_layers) for kind, opts in self.kinds.items()]

    def size(self) -> int:
        """Number of distinct architectures."""
        n = 1
        for d in self.decisions:
            n *= len(d.options)
        return n

    def min_d_model_multiple(self) -> int:
        """d_model must be a multiple of every attention head count offered."""
        return math.lcm(*(h for _, h in self.mixer_options))

    # --------------------------------------------------------------- encoding
    def decode(self, actions: Sequence[int]) -> Architecture:
        """Option indices (one per decision) → architecture (one dict per layer)."""
        decisions = self.decisions
        if len(actions) != len(decisions):
            raise ValueError(f"expected {len(decisions)} actions, got {len(actions)}")
        layers: Architecture = [{} for _ in range(self.num_layers)]
        for d, a in zip(decisions, actions):
            value = d.options[int(a)]
            if d.kind == "mixer":
                layers[d.layer].update(mixer=value[0], heads=int(value[1]))
            else:
                layers[d.layer][d.kind] = value
        return [{"mixer": l["mixer"], "heads": l["heads"], "ffn": l["ffn"], "ratio": int(l["ratio"])} for l in layers]

    def encode(self, architecture: Architecture) -> list[int]:
        """Architecture → option indices; raises ConfigError if it is not in this space."""
        arch = self.canonical(architecture)
        actions = []
        for d in self.decisions:
            layer = arch[d.layer]
            value = (layer["mixer"], layer["heads"]) if d.kind == "mixer" else layer[d.kind]
            if value not in d.options:
                raise ConfigError(f"layer {d.layer}: {d.kind} {value!r} is not in the search space; options: {list(d.options)}")
            actions.append(d.options.index(value))
        return actions

    def canonical(self, architecture: Architecture) -> Architecture:
        """Validated plain dicts with every field; a non-attention mixer gets heads=1."""
        if len(architecture) != self.num_layers:
            raise ConfigError(f"expected {self.num_layers} layers, got {len(architecture)}")
        out = []
        for layer in architecture:
            spec = layer if isinstance(layer, LayerSpec) else LayerSpec.from_dict(dict(layer))
            heads = int(spec.heads) if spec.mixer in HEADED_MIXERS else 1
            out.append({"mixer": spec.mixer, "heads": heads, "ffn": spec.ffn, "ratio": int(spec.ratio)})
        return out

    def sample_uniform(self, generator: torch.Generator) -> Architecture:
        """A uniformly random architecture (the random-search baseline)."""
        actions = [int(torch.randint(len(d.options), (1,), generator=generator)) for d in self.decisions]
        return self.decode(actions)

    def default_architecture(self) -> Architecture:
        """The hand-designed reference: ModelConfig's default title layers (attention ×4, ffn ×4)."""
        return self.canonical([LayerSpec() for _ in range(self.num_layers)])

    # ---------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {"num_layers": self.num_layers, "heads": list(self.heads), "ratios": list(self.ratios),
                "mixers": list(self.mixers), "ffns": list(self.ffns)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpace":
        return cls(**d)


def arch_key(architecture: Architecture) -> str:
    """A canonical string for an architecture: the cache key (same architecture, same key)."""
    return json.dumps([{k: layer[k] for k in ("mixer", "heads", "ffn", "ratio")} for layer in architecture],
                      separators=(",", ":"))


def describe(architecture: Architecture) -> str:
    """A short one-line form, e.g. ``att4/ffn×4 | glu/sep3×8 | ...``."""
    short = {"ffn": "ffn", "conv1x1": "c1x1", "sepconv3": "sep3", "sepconv5": "sep5"}
    parts = []
    for layer in architecture:
        mixer = f"att{layer['heads']}" if layer["mixer"] in HEADED_MIXERS else layer["mixer"]
        parts.append(f"{mixer}/{short.get(layer['ffn'], layer['ffn'])}×{layer['ratio']}")
    return " | ".join(parts)
