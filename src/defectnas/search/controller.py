"""The autoregressive LSTM controller that samples architectures (ENAS / Zoph & Le style).

Why an LSTM: the choice for one layer should depend on the choices already made (a cheap GLU
layer may pair well with a wide convolution after it), so decisions are made one at a time and
each sampled decision is embedded and fed back as the next input. One layer, 40 hidden units.

Every decision kind ("mixer", "ffn", "ratio") has its own output head and input embedding,
shared across layers (as in ENAS); the LSTM state tells the layers apart. Logits are squashed as
``tanh_constant · tanh(logits / temperature)`` (ENAS), which keeps the policy from collapsing on
a handful of noisy rewards.

``sample(generator)`` returns ``(architecture, log_prob, entropy)`` plus the option indices;
``evaluate(actions)`` recomputes log-probability and entropy of given choices (teacher forcing).
REINFORCE uses the latter, so an update needs only the architectures that were tried: a resumed
search can replay finished trials from ``trials.jsonl`` without keeping autograd graphs.
Sampling draws from an explicit ``torch.Generator`` whose state is checkpointed, so the same
seed gives the same sequence of architectures, across a kill and ``--resume`` too.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .space import Architecture, SearchSpace


class Sample(NamedTuple):
    architecture: Architecture  # one dict per layer
    log_prob: torch.Tensor  # () sum of the decisions' log-probabilities (with grad)
    entropy: torch.Tensor  # () sum of the decisions' entropies (with grad)
    actions: list[int]  # option index per decision


class Controller(nn.Module):
    """A 1-layer LSTM policy over the decisions of a :class:`SearchSpace`."""

    def __init__(self, space: SearchSpace, hidden: int = 40, temperature: float = 5.0, tanh_constant: float = 2.5,
                 seed: int = 0) -> None:
        super().__init__()
        self.space = space
        self.hidden = hidden
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.kinds = list(space.kinds)  # decision kinds, in decision order within a layer
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.start = nn.Parameter(torch.zeros(1, hidden))  # input of the first decision
        self.embed = nn.ModuleDict({k: nn.Embedding(len(opts), hidden) for k, opts in space.kinds.items()})
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, len(opts)) for k, opts in space.kinds.items()})
        init = torch.Generator().manual_seed(seed)
        for p in self.parameters():  # ENAS: small uniform init, so the first policy is near-uniform
            nn.init.uniform_(p, -0.1, 0.1, generator=init)

    def _logits(self, kind: str, h: torch.Tensor) -> torch.Tensor:
        logits = self.heads[kind](h)  # (1, n_options)
        if self.tanh_constant:
            logits = self.tanh_constant * torch.tanh(logits / self.temperature)
        return logits

    def _run(self, actions: Sequence[int] | None, generator: torch.Generator | None) -> Sample:
        """One pass over all decisions; samples where ``actions`` is None, else teacher-forces."""
        decisions = self.space.decisions
        x = self.start  # (1, H)
        h = c = torch.zeros(1, self.hidden)
        log_probs, entropies, chosen = [], [], []
        for i, d in enumerate(decisions):
            h, c = self.lstm(x, (h, c))  # (1, H) each
            logp = F.log_softmax(self._logits(d.kind, h), dim=-1)  # (1, n)
            if actions is None:
                a = int(torch.multinomial(logp.detach().exp(), 1, generator=generator))
            else:
                a = int(actions[i])
            chosen.append(a)
            log_probs.append(logp[0, a])
            entropies.append(-(logp.exp() * logp).sum())
            x = self.embed[d.kind](torch.tensor([a]))  # (1, H): the decision, fed back
        return Sample(self.space.decode(chosen), torch.stack(log_probs).sum(), torch.stack(entropies).sum(), chosen)

    def sample(self, generator: torch.Generator | None = None) -> Sample:
        """Draw an architecture: ``(architecture, log_prob, entropy, actions)``."""
        return self._run(None, generator)

    def evaluate(self, architecture: Architecture) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of the policy choosing ``architecture`` (with grad)."""
        s = self._run(self.space.encode(architecture), None)
        return s.log_prob, s.entropy

    @torch.no_grad()
    def probabilities(self) -> list[dict[str, float]]:
        """Greedy-path option probabilities per decision (for logs and plots): what it prefers now."""
        out = []
        x, h, c = self.start, torch.zeros(1, self.hidden), torch.zeros(1, self.hidden)
        for d in self.space.decisions:
            h, c = self.lstm(x, (h, c))
            p = F.softmax(self._logits(d.kind, h), dim=-1)[0]
            out.append({str(opt): float(p[j]) for j, opt in enumerate(d.options)})
            x = self.embed[d.kind](p.argmax().view(1))
        return out
