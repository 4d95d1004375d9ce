"""The autoregressive LSTM controller that samples architectures (ENAS / Zoph & Le style).

Why an LSTM: the choice for one layer should depend on the choices already made (a cheap GLU
layer may pair well with a wide convolution after it), so decisions are made one at a time and
each sampled decision is embedded and fed back as the next input. One layer, 40 hidden units.

Every decision kind ("mixer", "ffn", "ratio", "query_layers", ...) has its own output head and
input embedding, shared across layers (as in ENAS); the LSTM state tells the layers apart. A
decision the space marks inactive given the earlier ones (the ops of a cell that was left out)
is skipped: no LSTM step, no log-probability, action ``-1``. Logits are squashed as
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

from .space import Architecture, Space


class Sample(NamedTuple):
    architecture: Architecture  # one dict per layer
    log_prob: torch.Tensor  # () sum of the decisions' log-probabilities (with grad)
    entropy: torch.Tensor  # () sum of the decisions' entropies (with grad)
    actions: list[int]  # option index per decision (-1: inactive)


class Controller(nn.Module):
    """A 1-layer LSTM policy over the decisions of a search space."""

    def __init__(self, space: Space, hidden: int = 40, temperature: float = 5.0, tanh_constant: float = 2.5,
                 seed: int = 0) -> None:
        super().__init__()
        self.space = space
        self.hidden = hidden
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        kinds: dict[str, int] = {}
        for d in space.decisions:
            kinds.setdefault(d.kind, len(d.options))
        self.kinds = list(kinds)  # decision kinds, in first-decision order
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.start = nn.Parameter(torch.zeros(1, hidden))  # input of the first decision
        self.embed = nn.ModuleDict({k: nn.Embedding(n, hidden) for k, n in kinds.items()})
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in kinds.items()})
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
        log_probs, entropies, chosen, values = [], [], [], {}
        for i, d in enumerate(decisions):
            if not self.space.active(d, values):
                chosen.append(-1)
                continue
            h, c = self.lstm(x, (h, c))  # (1, H) each
            logp = F.log_softmax(self._logits(d.kind, h), dim=-1)  # (1, n)
            if actions is None:
                a = int(torch.multinomial(logp.detach().exp(), 1, generator=generator))
            else:
                a = int(actions[i])
            chosen.append(a)
            values[d.name] = d.options[a]
            log_probs.append(logp[0, a])
            entropies.append(-(logp.exp() * logp).sum())
            x = self.embed[d.kind](torch.tensor([a]))  # (1, H): the decision, fed back
        return Sample(self.space.decode(chosen), torch.stack(log_probs).sum(), torch.stack(entropies).sum(), chosen)

    def sample(self, generator: torch.Generator | None = None) -> Sample:
        """Draw an architecture: ``(architecture, log_prob, entropy, actions)``."""
        return self._run(None, generator)

    def evaluate(self, architecture: Architecture) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of the policy choosing ``architecture`` (with grad)."""
        return self.evaluate_actions(self.space.encode(architecture))

    def evaluate_actions(self, actions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of the policy making exactly these choices (with grad).
        REINFORCE uses the actions that were sampled, which stay exact where two action
        sequences build one architecture (a clamped fine-tuning depth, say)."""
        s = self._run(actions, None)
        return s.log_prob, s.entropy

    @torch.no_grad()
    def probabilities(self) -> list[dict[str, float]]:
        """Greedy-path option probabilities per decision (for logs and plots): what it prefers now."""
        out = []
        x, h, c, values = self.start, torch.zeros(1, self.hidden), torch.zeros(1, self.hidden), {}
        for d in self.space.decisions:
            if not self.space.active(d, values):
                continue
            h, c = self.lstm(x, (h, c))
            p = F.softmax(self._logits(d.kind, h), dim=-1)[0]
            out.append({str(opt): float(p[j]) for j, opt in enumerate(d.options)})
            values[d.name] = d.options[int(p.argmax())]
            x = self.embed[d.kind](p.argmax().view(1))
        return out
