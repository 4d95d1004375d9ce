"""Search spaces: which architectures a search may choose, as plain JSON, and how to build them.

Why a module of its own: an architecture is plain data (a genotype, as in DARTS/ENAS), kept
apart from the code that samples it (a strategy) and the code that builds it. Every space
turns an architecture into ``DefectClassifier`` options with :meth:`Space.to_options` — the one
builder of search children, top-k retrains, Pareto-front models and ``train``'s own default — so
a searched architecture is trained later exactly as it was during the search.

A space is a sequence of categorical :class:`Decision` s. A decision may be *inactive* given the
ones before it (the ops of a cell that the "number of cells" decision left out), and is then
skipped: the controller makes no choice there, and its action is recorded as ``-1``. Decisions
of the same ``kind`` (every cell's "mixer", say) share the controller's input embedding and
output head, as in ENAS.

Spaces are registered by name (``--space NAME``), like the ops: a new space is one decorated
class.

- ``seed`` — the paper's space, exactly: per product-encoder layer (5) a token mixer (attention
  with 1, 4 or 8 heads, or a GLU), a feed-forward op (the feed-forward block, a 1×1 conv, or a
  3×1 / 5×1 depthwise-separable conv) and its ratio (4, 8, 16). An architecture is a list of
  layer dicts, ``[{"mixer": "glu", "heads": 1, "ffn": "sepconv3", "ratio": 8}, ...]`` — what
  ``title_layers`` takes. It sits on top of whatever base model the options describe.
- ``serving`` — the decisions that move accuracy or *served* latency. Query tower (runs on every
  request): pre-trained layers kept (1–6, dropped from the top), top layers fine-tuned (0–2),
  the query token cap. Title tower (cached, so depth costs training time, not serving time): top
  layers fine-tuned (0–2), searched cells on top (0–5, each with the seed's per-layer ops);
  d_model (64/128), the matching layer, the pre-trained sentence vector, and when asked the late
  interaction (every query token against every title token, model/late_interaction.py). An architecture is a
  dict, e.g. ``{"query_layers": 6, "query_trainable": 0, "query_max_len": 12, "title_trainable":
  0, "d_model": 64, "matching": true, "sentence_vector": true, "title_cells": [{...}]}``, with
  ``"late_interaction": true`` only where it is on (so an architecture written before that
  decision existed is the same architecture, with the same key).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import torch

from ..config import LayerSpec, ModelConfig
from ..errors import ConfigError
from ..model.ops import FFNS, MIXERS
from ..model.registry import Registry

HEADED_MIXERS = ("attention",)  # mixers whose head count is a choice
Architecture = Any  # plain JSON: a list of layer dicts (seed) or a dict (serving)
SPACES = Registry("search space")


@dataclass(frozen=True)
class Decision:
    """One categorical choice: its name, its kind (shared controller head), its options."""

    name: str  # unique within the space, e.g. "cell2.ffn" or "query_layers"
    kind: str  # decisions of one kind share the controller's embedding and head
    options: tuple  # the values to choose from (mixer options are (name, heads) pairs)
    layer: int = -1  # the cell a per-cell decision belongs to (-1: none)


class Space:
    """What every space provides; subclasses define ``decisions``, ``build``, ``values`` and ``to_options``."""

    name = ""

    # ------------------------------------------------------ subclass contract
    @property
    def decisions(self) -> list[Decision]:
        raise NotImplementedError

    def active(self, decision: Decision, values: dict[str, Any]) -> bool:
        """Whether ``decision`` is made, given the values chosen before it (all, by default)."""
        return True

    def build(self, values: dict[str, Any]) -> Architecture:
        """Chosen values (decision name → value, active decisions only) → architecture."""
        raise NotImplementedError

    def values(self, architecture: Architecture) -> dict[str, Any]:
        """Architecture → the value of every active decision; ConfigError if it is malformed."""
        raise NotImplementedError

    def to_options(self, architecture: Architecture) -> dict[str, Any]:
        """The ``DefectClassifier`` options this architecture sets (merged over the base options)."""
        raise NotImplementedError

    # what the default architecture is called where the search reports on it: in the serving space it is train's default;
    # a space that cannot express that model (the seed space) says what its own reference is
    reference = "train's default"

    def default_architecture(self) -> Architecture:
        """The reference the noise floor and the paired test use."""
        raise NotImplementedError

    def describe(self, architecture: Architecture) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    # --------------------------------------------------------------- generic
    def decode(self, actions: Sequence[int]) -> Architecture:
        """Option indices (one per decision, -1 where inactive) → architecture."""
        decisions = self.decisions
        if len(actions) != len(decisions):
            raise ValueError(f"expected {len(decisions)} actions, got {len(actions)}")
        values: dict[str, Any] = {}
        for d, a in zip(decisions, actions):
            if self.active(d, values):
                if not 0 <= int(a) < len(d.options):
                    raise ValueError(f"action {a} out of range for {d.name}")
                values[d.name] = d.options[int(a)]
        return self.build(values)

    def encode(self, architecture: Architecture) -> list[int]:
        """Architecture → option indices (-1 where inactive); ConfigError if it is not in this space."""
        values = self.values(architecture)
        actions, seen = [], {}
        for d in self.decisions:
            if not self.active(d, seen):
                actions.append(-1)
                continue
            value = values[d.name]
            if value not in d.options:
                raise ConfigError(f"{d.name.replace('.', ' ')} {value!r} is not in the search space; options: {list(d.options)}")
            seen[d.name] = value
            actions.append(d.options.index(value))
        return actions

    def canonical(self, architecture: Architecture) -> Architecture:
        """The validated architecture with every field, in the space's own form."""
        return self.decode(self.encode(architecture))

    def key(self, architecture: Architecture) -> str:
        return arch_key(self.canonical(architecture))

    def sample_actions(self, generator: torch.Generator) -> list[int]:
        """Uniformly random option indices for the active decisions (the random-search baseline)."""
        values: dict[str, Any] = {}
        actions = []
        for d in self.decisions:
            if not self.active(d, values):
                actions.append(-1)
                continue
            a = int(torch.randint(len(d.options), (1,), generator=generator))
            values[d.name] = d.options[a]
            actions.append(a)
        return actions

    def sample_uniform(self, generator: torch.Generator) -> Architecture:
        return self.decode(self.sample_actions(generator))

    def mutate(self, architecture: Architecture, generator: torch.Generator) -> Architecture:
        """One decision of ``architecture`` changed to another option (regularized evolution's
        mutation, Real et al. 2019). Decisions that become active get uniform random values."""
        actions = self.encode(architecture)
        values = self.values(architecture)
        mutable = [i for i, (d, a) in enumerate(zip(self.decisions, actions)) if a >= 0 and len(d.options) > 1]
        i = mutable[int(torch.randint(len(mutable), (1,), generator=generator))]
        d = self.decisions[i]
        step = 1 + int(torch.randint(len(d.options) - 1, (1,), generator=generator))
        values[d.name] = d.options[(actions[i] + step) % len(d.options)]
        chosen: dict[str, Any] = {}
        for dd in self.decisions:  # re-walk: keep values still active, draw newly active ones
            if not self.active(dd, chosen):
                continue
            if dd.name not in values:
                values[dd.name] = dd.options[int(torch.randint(len(dd.options), (1,), generator=generator))]
            chosen[dd.name] = values[dd.name]
        return self.build(chosen)

    def size(self) -> int:
        """Number of distinct action sequences (an upper bound on distinct architectures)."""
        raise NotImplementedError


def _cell_decisions(space_cells: int, mixers, heads, ffns, ratios) -> list[Decision]:
    mixer_options = mixer_choices(mixers, heads)
    out = []
    for i in range(space_cells):
        out += [Decision(f"cell{i}.mixer", "mixer", mixer_options, i), Decision(f"cell{i}.ffn", "ffn", tuple(ffns), i),
                Decision(f"cell{i}.ratio", "ratio", tuple(ratios), i)]
    return out


def mixer_choices(mixers: Sequence[str], heads: Sequence[int]) -> tuple[tuple[str, int], ...]:
    """(name, heads) pairs: one per head count for attention, one (heads=1) for the others."""
    out = []
    for name in mixers:
        out += [(name, h) for h in heads] if name in HEADED_MIXERS else [(name, 1)]
    return tuple(out)


def canonical_cell(layer: Any) -> dict[str, Any]:
    """A cell as a plain dict with every field; a non-attention mixer gets heads=1."""
    spec = layer if isinstance(layer, LayerSpec) else LayerSpec.from_dict(dict(layer))
    heads = int(spec.heads) if spec.mixer in HEADED_MIXERS else 1
    return {"mixer": spec.mixer, "heads": heads, "ffn": spec.ffn, "ratio": int(spec.ratio)}


def _cell_values(cells: Sequence[Any], prefix: str = "cell") -> dict[str, Any]:
    out = {}
    for i, layer in enumerate(cells):
        c = canonical_cell(layer)
        out.update({f"{prefix}{i}.mixer": (c["mixer"], c["heads"]), f"{prefix}{i}.ffn": c["ffn"], f"{prefix}{i}.ratio": c["ratio"]})
    return out


def _cells_from(values: dict[str, Any], n: int) -> list[dict[str, Any]]:
    return [{"mixer": values[f"cell{i}.mixer"][0], "heads": int(values[f"cell{i}.mixer"][1]), "ffn": values[f"cell{i}.ffn"],
             "ratio": int(values[f"cell{i}.ratio"])} for i in range(n)]


def _check_ops(mixers, ffns) -> None:
    for name in mixers:
        MIXERS.get(name)  # raises with the valid names on a typo
    for name in ffns:
        FFNS.get(name)


@SPACES.register("seed")
@dataclass
class SearchSpace(Space):
    """The paper's space: per product-encoder layer a token mixer (with heads), a feed-forward op, a ratio."""

    reference = "the seed space's reference (att4/ffn×4 in every title layer)"  # not train's default: this space has no query tower decision

    num_layers: int = 5  # title-encoder layers
    heads: tuple[int, ...] = (1, 4, 8)  # head counts offered for attention
    ratios: tuple[int, ...] = (4, 8, 16)  # feed-forward ratios offered
    mixers: tuple[str, ...] = field(default_factory=lambda: tuple(MIXERS.names()))  # token mixers offered
    ffns: tuple[str, ...] = field(default_factory=lambda: tuple(FFNS.names()))  # feed-forward ops offered

    def __post_init__(self) -> None:
        self.heads, self.ratios = tuple(self.heads), tuple(self.ratios)
        self.mixers, self.ffns = tuple(self.mixers), tuple(self.ffns)
        _check_ops(self.mixers, self.ffns)
        if self.num_layers < 1 or not (self.heads and self.ratios and self.mixers and self.ffns):
            raise ConfigError("a search space needs at least one layer and one option per choice")
        self._decisions = _cell_decisions(self.num_layers, self.mixers, self.heads, self.ffns, self.ratios)

    @property
    def mixer_options(self) -> tuple[tuple[str, int], ...]:
        return mixer_choices(self.mixers, self.heads)

    @property
    def kinds(self) -> dict[str, tuple]:
        """The options of each decision kind, in the order they are decided within a layer."""
        return {"mixer": self.mixer_options, "ffn": self.ffns, "ratio": self.ratios}

    @property
    def decisions(self) -> list[Decision]:
        return self._decisions

    def min_d_model_multiple(self, options: dict[str, Any] | None = None) -> int:
        """d_model must be a multiple of every attention head count offered."""
        return math.lcm(*(h for _, h in self.mixer_options))

    def size(self) -> int:
        return math.prod(len(d.options) for d in self.decisions)

    def build(self, values: dict[str, Any]) -> Architecture:
        return _cells_from(values, self.num_layers)

    def values(self, architecture: Architecture) -> dict[str, Any]:
        if not isinstance(architecture, (list, tuple)):
            raise ConfigError("a seed-space architecture is a list of layer dicts")
        if len(architecture) != self.num_layers:
            raise ConfigError(f"expected {self.num_layers} layers, got {len(architecture)}")
        return _cell_values(architecture)

    def to_options(self, architecture: Architecture) -> dict[str, Any]:
        return {"title_layers": [canonical_cell(layer) for layer in architecture]}

    def default_architecture(self) -> Architecture:
        """The hand-designed reference: ModelConfig's default layer (attention ×4, ffn ×4) in every layer
        (the reference even where ``space_options`` leave it out of the space)."""
        return [canonical_cell(LayerSpec()) for _ in range(self.num_layers)]

    def describe(self, architecture: Architecture) -> str:
        return describe_cells(architecture)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "seed", "num_layers": self.num_layers, "heads": list(self.heads), "ratios": list(self.ratios),
                "mixers": list(self.mixers), "ffns": list(self.ffns)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpace":
        return cls(**{k: v for k, v in d.items() if k != "name"})


SeedSpace = SearchSpace


@SPACES.register("serving")
@dataclass
class ServingSpace(Space):
    """What moves accuracy or served latency: the query tower's depth, fine-tuning and token cap;
    the title tower's fine-tuning and cells; width, matching, the sentence vector, the late interaction."""

    query_layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6)  # pre-trained layers the query tower keeps (from the bottom)
    query_trainable: tuple[int, ...] = (0, 1, 2)  # of those, top layers fine-tuned (the tower's own copy)
    query_max_len: tuple[int, ...] = (6, 8, 12)  # query token cap (word pieces)
    title_trainable: tuple[int, ...] = (0, 1, 2)  # top title-tower pre-trained layers fine-tuned
    d_model: tuple[int, ...] = (64, 128)
    matching: tuple[bool, ...] = (False, True)
    sentence_vector: tuple[bool, ...] = (True, False)
    # off unless asked (--space-options '{"late_interaction": [false, true]}'): on train's default it moved test AP by
    # +0.005 [−0.003, +0.014] at ~1.1× the served latency (README), so by default the search does not spend children on it
    late_interaction: tuple[bool, ...] = (False,)
    max_cells: int = 5  # searched cells on the title tower: 0 … max_cells
    heads: tuple[int, ...] = (1, 4, 8)
    ratios: tuple[int, ...] = (4, 8, 16)
    mixers: tuple[str, ...] = field(default_factory=lambda: tuple(MIXERS.names()))
    ffns: tuple[str, ...] = field(default_factory=lambda: tuple(FFNS.names()))

    FIELDS = ("query_layers", "query_trainable", "query_max_len", "title_trainable", "d_model", "matching", "sentence_vector")
    OPTIONAL = {"late_interaction": False}  # decisions an architecture may leave out (their value then), written only when not that

    def __post_init__(self) -> None:
        for name in (*self.FIELDS, *self.OPTIONAL, "heads", "ratios", "mixers", "ffns"):
            setattr(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise ConfigError(f"the serving space needs at least one option for {name}")
        _check_ops(self.mixers, self.ffns)
        if min(self.query_layers) < 1 or self.max_cells < 0:
            raise ConfigError("query_layers options must be at least 1 and max_cells at least 0")
        top = [Decision(name, name, getattr(self, name)) for name in self.FIELDS]
        # an optional decision with only its left-out value (a space saved before it existed) is no decision:
        # the controller then samples exactly what it sampled for that space
        top += [Decision(name, name, getattr(self, name)) for name, off in self.OPTIONAL.items() if getattr(self, name) != (off,)]
        top.append(Decision("title_cells", "title_cells", tuple(range(self.max_cells + 1))))
        self._decisions = top + _cell_decisions(self.max_cells, self.mixers, self.heads, self.ffns, self.ratios)

    @property
    def decisions(self) -> list[Decision]:
        return self._decisions

    def active(self, decision: Decision, values: dict[str, Any]) -> bool:
        return decision.layer < 0 or decision.layer < values.get("title_cells", 0)

    def min_d_model_multiple(self, options: dict[str, Any] | None = None) -> int:
        return math.lcm(*(h for _, h in mixer_choices(self.mixers, self.heads)))

    def size(self) -> int:
        per_cell = len(mixer_choices(self.mixers, self.heads)) * len(self.ffns) * len(self.ratios)
        return math.prod(len(getattr(self, n)) for n in (*self.FIELDS, *self.OPTIONAL)) * sum(per_cell ** n for n in range(self.max_cells + 1))

    def build(self, values: dict[str, Any]) -> Architecture:
        arch = {name: values[name] for name in self.FIELDS}
        arch["query_trainable"] = min(int(arch["query_trainable"]), int(arch["query_layers"]))  # cannot tune more than it keeps
        arch = {k: (bool(v) if isinstance(v, bool) else int(v)) for k, v in arch.items()}
        arch.update({name: bool(values[name]) for name, off in self.OPTIONAL.items() if values.get(name, off) != off})
        arch["title_cells"] = _cells_from(values, int(values["title_cells"]))
        return arch

    def values(self, architecture: Architecture) -> dict[str, Any]:
        if not isinstance(architecture, dict):
            raise ConfigError("a serving-space architecture is a dict (query_layers, ..., title_cells)")
        missing = [k for k in (*self.FIELDS, "title_cells") if k not in architecture]
        unknown = sorted(set(architecture) - {*self.FIELDS, *self.OPTIONAL, "title_cells"})
        if missing or unknown:
            raise ConfigError(f"serving-space architecture: missing {missing}, unknown {unknown}")
        cells = list(architecture["title_cells"])
        values = {k: architecture[k] for k in self.FIELDS}
        values.update({name: architecture.get(name, off) for name, off in self.OPTIONAL.items()})
        values["title_cells"] = len(cells)
        values.update(_cell_values(cells))
        return values

    def to_options(self, architecture: Architecture) -> dict[str, Any]:
        """Options for any architecture of this form — also one outside the option lists (``train``'s
        default when ``space_options`` leave it out), which the search trains only as its reference."""
        a = {**architecture, "title_cells": [canonical_cell(c) for c in architecture["title_cells"]]}
        return {"query_backbone_layers": a["query_layers"], "query_backbone_trainable": a["query_trainable"],
                "query_max_len": a["query_max_len"], "title_backbone_trainable": a["title_trainable"], "d_model": a["d_model"],
                "matching": a["matching"], "sentence_vector": a["sentence_vector"], "title_layers": a["title_cells"],
                "late_interaction": bool(a.get("late_interaction", False))}

    def default_architecture(self) -> Architecture:
        """``train``'s default model, written in this space."""
        m = ModelConfig()
        return {"query_layers": m.query_backbone_layers, "query_trainable": m.query_backbone_trainable,
                "query_max_len": m.query_max_len, "title_trainable": m.title_backbone_trainable, "d_model": m.d_model,
                "matching": m.matching, "sentence_vector": m.sentence_vector,
                "title_cells": [canonical_cell(s) for s in m.title_layers], **({"late_interaction": True} if m.late_interaction else {})}

    def describe(self, architecture: Architecture) -> str:
        a = architecture
        q = f"query {a['query_layers']}L" + (f" (top {a['query_trainable']} tuned)" if a["query_trainable"] else "") + f" ≤{a['query_max_len']}"
        t = "title 6L" + (f" (top {a['title_trainable']} tuned)" if a["title_trainable"] else "")
        cells = describe_cells(a["title_cells"]) or "no cells"
        flags = (f"d{a['d_model']}" + (" +match" if a["matching"] else "") + (" +late" if a.get("late_interaction") else "")
                 + (" +sent" if a["sentence_vector"] else ""))
        return f"{q} | {t} + {cells} | {flags}"

    def to_dict(self) -> dict[str, Any]:
        d = {"name": "serving", "max_cells": self.max_cells}
        for name in (*self.FIELDS, *self.OPTIONAL, "heads", "ratios", "mixers", "ffns"):
            d[name] = list(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ServingSpace":
        """A saved space; one saved before an optional decision existed gets only that decision's
        left-out value, so it samples, keys and resumes as it did."""
        return cls(**{**{name: [off] for name, off in cls.OPTIONAL.items()}, **{k: v for k, v in d.items() if k != "name"}})


def make_space(name: str, **settings: Any) -> Space:
    """The registered space ``name`` (``--space``), with its settings (``--space-options``).

    Raises ConfigError in one line on an unknown space or option, an option given as one value
    where the space takes a list of choices, or values the space cannot use."""
    cls = SPACES.get(name)
    options = {f.name: f for f in fields(cls) if f.init}
    for key, value in settings.items():
        if key not in options:
            raise ConfigError(f"--space-options: the {name} space has no option {key!r}; its options: {', '.join(options)}")
        if str(options[key].type).startswith("tuple") and not isinstance(value, (list, tuple)):
            raise ConfigError(f"--space-options: {key} takes a list of the values to search, e.g. [{json.dumps(value)}]; got {json.dumps(value)}")
    try:
        return cls(**settings)
    except (TypeError, ValueError) as e:  # e.g. a string among numbers: compared or counted in __post_init__
        raise ConfigError(f"--space-options {json.dumps(settings)}: not usable by the {name} space ({e})") from None


def space_from_dict(d: dict[str, Any]) -> Space:
    return SPACES.get(d.get("name", "seed")).from_dict(d)


def arch_key(architecture: Architecture) -> str:
    """A canonical string for a (canonical) architecture: the cache key."""
    return json.dumps(architecture, sort_keys=True, separators=(",", ":"))


def describe_cells(cells: Sequence[dict[str, Any]]) -> str:
    """A short one-line form, e.g. ``att4/ffn×4 | glu/sep3×8 | ...``."""
    short = {"ffn": "ffn", "conv1x1": "c1x1", "sepconv3": "sep3", "sepconv5": "sep5"}
    parts = []
    for layer in cells:
        mixer = f"att{layer['heads']}" if layer["mixer"] in HEADED_MIXERS else layer["mixer"]
        parts.append(f"{mixer}/{short.get(layer['ffn'], layer['ffn'])}×{layer['ratio']}")
    return " | ".join(parts)


def describe(architecture: Architecture) -> str:
    """A one-line form of an architecture of either space."""
    if isinstance(architecture, dict):
        return ServingSpace().describe(architecture)
    return describe_cells(architecture)
