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


# ---- tree drafting (mtp_edu.tree) ------------------------------------------------------------------
@dataclass
class TreeStep:
    """One tree draft-verify-accept round. Node 0 is the root: the pending token, already certain (its
    q and p are 1 by convention); nodes 1.. are drafts, numbered depth by depth.

    tokens[j], parents[j] : node j's token and parent (parents[0] = -1, parents[j] < j)
    q[j]  : the drafter's probability of tokens[j] after its parent's path
    p[j]  : the main model's probability of tokens[j] there (after temperature etc., as in Step)
    path  : the accepted nodes, in depth order (the root excluded)
    extra_token, extra_kind : the main model's token after the path: the "correction" when the last
            accepted node (or the root) has children and all were rejected, the "bonus" when it is a leaf
    """
    tokens: list[int]
    parents: list[int]
    q: list[float]
    p: list[float]
    path: list[int]
    extra_token: int
    extra_kind: str
    main_forwards: int = 1
    draft_forwards: int = 0

    def __post_init__(self):
        n = len(self.tokens)
        if not n or len(self.parents) != n or len(self.q) != n or len(self.p) != n:
            raise ValueError("tokens, parents, q and p need one entry per node, the root included")
        if self.parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(self.parents[1:], 1)):
            raise ValueError(f"parents={self.parents}: parents[0] must be -1 and every other parent an earlier node")
        last = 0
        for j in self.path:
            if not 0 < j < n or self.parents[j] != last:
                raise ValueError(f"path={self.path} is not a path down from the root")
            last = j
        if self.extra_kind not in ("correction", "bonus"):
            raise ValueError(f"extra_kind={self.extra_kind!r} must be 'correction' or 'bonus'")
        if (self.extra_kind == "bonus") != (not self.children()[last]):
            raise ValueError("extra_kind is 'bonus' exactly when the last accepted node is a leaf")

    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in self.tokens]
        for j, p in enumerate(self.parents[1:], 1):
            kids[p].append(j)
        return kids

    @property
    def depths(self) -> list[int]:
        out = [0]
        for p in self.parents[1:]:
            out.append(out[p] + 1)
        return out

    @property
    def nodes(self) -> int:
        """Drafted nodes the main model verified (the root excluded)."""
        return len(self.tokens) - 1

    @property
    def depth(self) -> int:
        return max(self.depths)

    @property
    def accepted(self) -> int:
        return len(self.path)

    @property
    def emitted(self) -> list[int]:
        return [self.tokens[j] for j in self.path] + [self.extra_token]

    @property
    def tried_depth(self) -> int:
        """The deepest depth at which the walk tried a child: one past the path, unless it ended at a leaf."""
        return self.accepted + (self.extra_kind == "correction")

    def outcomes(self) -> list[str]:
        """Per node: "root", "accepted", "rejected" (tried by the walk and rejected) or "untried"."""
        out, kids = ["untried"] * len(self.tokens), self.children()
        out[0] = "root"
        for parent, chosen in zip([0] + self.path, self.path + [None]):
            for c in kids[parent]:
                if c == chosen:
                    out[c] = "accepted"
                    break
                out[c] = "rejected"                   # tried before the accepted child, or all of them
        return out

    def chain_step(self) -> Step:
        """The same step as a chain `Step`; only for a tree with at most one child per node."""
        if any(len(k) > 1 for k in self.children()):
            raise ValueError("this step's tree branches; only a chain converts to a Step")
        return Step(drafted=self.tokens[1:], q=self.q[1:], p=self.p[1:], accepted=self.accepted,
                    extra_token=self.extra_token, extra_kind=self.extra_kind, main_forwards=self.main_forwards,
                    draft_forwards=self.draft_forwards)


@dataclass
class TreeTrace(Trace):
    """Every step of one `tree_generate` call. `tokens`, `tau` and `expected_tokens` work as for chains.

    a_k (acceptance_per_depth) = #steps whose path reached depth k / #steps whose walk tried a child at
    depth k: for a chain this is Trace's definition. `nodes_per_step` is what a step costs the verify pass.
    """
    steps: list[TreeStep] = field(default_factory=list)
    tree: str = ""                       # the tree shape, as tree_generate was given it

    def acceptance_per_depth(self) -> list[float | None]:
        n = max((s.depth for s in self.steps), default=0)
        rates = []
        for k in range(1, n + 1):
            tried = [s for s in self.steps if s.tried_depth >= k]
            rates.append(sum(s.accepted >= k for s in tried) / len(tried) if tried else None)
        return rates

    def accepted_histogram(self) -> list[int]:
        counts = [0] * (max((s.depth for s in self.steps), default=0) + 1)
        for s in self.steps:
            counts[s.accepted] += 1
        return counts

    def nodes_per_step(self) -> float:
        """Mean drafted nodes verified per main forward (for a chain: the draft depth)."""
        return sum(s.nodes for s in self.steps) / len(self.steps) if self.steps else 0.0

    @classmethod
    def from_json(cls, text: str) -> "TreeTrace":
        data = json.loads(text)
        data["steps"] = [TreeStep(**s) for s in data["steps"]]
        return cls(**data)
