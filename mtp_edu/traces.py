"""Traces of speculative decoding: what was drafted, what the main model thought, what was kept.

One `Step` per main-model verification forward. From a `Trace` come the numbers the notebooks and
widgets show:

    tau      = mean tokens emitted per verification forward (accepted drafts + 1 correction/bonus)
    a_k      = P(draft k accepted | drafts 1..k-1 accepted)          (conditional acceptance)
    E[tokens per step] = 1 + a_1 + a_1 a_2 + ... + a_1 ... a_n        (as in the 'Complete Guide' tutorial)

With the conditional a_k measured on the same steps, 1 + a_1 + a_1 a_2 + ... counts exactly the tokens
of a step that drafted the full depth; it differs from tau only where steps drafted fewer (the end
of the output, a confidence stop, a prompt-lookup miss).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class Step:
    """One draft-verify-accept round.

    drafted[j]  : draft token j+1 (from MTP module j+1, or the drafter used)
    q[j]        : the drafter's probability of drafted[j]
    p[j]        : the main model's probability of drafted[j] at its position (after temperature etc.)
    accepted    : how many drafts were kept (a prefix: drafted[:accepted])
    extra_token : the token the main model adds: the correction at the first rejection, or the
                  bonus token when every draft was accepted
    extra_kind  : "correction" or "bonus"
    main_forwards, draft_forwards: forward passes this step cost (main verifies once per step)
    """
    drafted: list[int]
    q: list[float]
    p: list[float]
    accepted: int
    extra_token: int
    extra_kind: str
    main_forwards: int = 1
    draft_forwards: int = 0

    def __post_init__(self):
        if not 0 <= self.accepted <= len(self.drafted):
            raise ValueError(f"accepted={self.accepted} must lie in [0, {len(self.drafted)}]")
        if self.extra_kind not in ("correction", "bonus"):
            raise ValueError(f"extra_kind={self.extra_kind!r} must be 'correction' or 'bonus'")
        if (self.extra_kind == "bonus") != (self.accepted == len(self.drafted)):
            raise ValueError("extra_kind is 'bonus' exactly when every draft was accepted")

    @property
    def emitted(self) -> list[int]:
        """Tokens this step appends to the output."""
        return self.drafted[:self.accepted] + [self.extra_token]


@dataclass
class Trace:
    """Every step of one speculative_generate call, plus what it was run with."""
    prompt: list[int]
    rule: str
    draft_depth: int
    steps: list[Step] = field(default_factory=list)
    first_token: int | None = None       # from the prefill forward, before the first draft
    lossy: bool = False                  # True for rules that change the output distribution

    @property
    def tokens(self) -> list[int]:
        """The generated tokens (prompt excluded), before any cut to max_new_tokens."""
        out = [] if self.first_token is None else [self.first_token]
        for s in self.steps:
            out += s.emitted
        return out

    def tau(self) -> float:
        """Mean tokens emitted per verification forward (the ceiling is draft_depth + 1)."""
        forwards = sum(s.main_forwards for s in self.steps)
        return sum(len(s.emitted) for s in self.steps) / forwards if forwards else 0.0

    def acceptance_per_depth(self) -> list[float | None]:
        """a_k = #steps that accepted >= k / #steps that reached depth k; None where none did."""
        n = max((len(s.drafted) for s in self.steps), default=0)
        rates = []
        for k in range(1, n + 1):
            reached = [s for s in self.steps if len(s.drafted) >= k and s.accepted >= k - 1]
            rates.append(sum(s.accepted >= k for s in reached) / len(reached) if reached else None)
        return rates

    def expected_tokens(self) -> float:
        """1 + a_1 + a_1 a_2 + ... from the measured conditional acceptances (the 'Complete Guide'
        tutorial's formula)."""
        total, prod = 1.0, 1.0
        for a in self.acceptance_per_depth():
            if a is None:
                break
            prod *= a
            total += prod
        return total

    def accepted_histogram(self) -> list[int]:
        """counts[j] = number of steps that accepted exactly j drafts."""
        n = max((len(s.drafted) for s in self.steps), default=0)
        counts = [0] * (n + 1)
        for s in self.steps:
            counts[s.accepted] += 1
        return counts

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        data = json.loads(text)
        data["steps"] = [Step(**s) for s in data["steps"]]
        return cls(**data)
