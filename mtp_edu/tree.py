"""Tree drafting: several candidates per depth, checked by ONE main-model forward with a tree-attention mask.

A chain (`speculative_generate`) keeps one guess per depth, so one wrong guess at depth 1 throws the
whole step away. A tree keeps the top few candidates at each depth, and the main model checks every
branch in the same forward pass (Medusa, Cai et al. 2024; SpecInfer, Miao et al. 2024; EAGLE-2, Li et
al. 2024; Sequoia, Chen et al. 2024; see docs/references.md). Words used below:

    root      node 0: the pending token x_{n+1}, the main model's next token (certain, not a draft)
    node j    a draft; parents[j] < j; depth(j) = depth(parents[j]) + 1; path(j) = root, ..., j
    shape     which candidates to draft: `TreeSpec` (static) or `DynamicTree` (grown per step)

One step (`TreeDecoder.step`):
1. draft:  grow the tree depth by depth from the MTP modules (`TreeDrafter`). Sequential modules:
           module k runs on every surviving branch's (h^{k-1}, token), all branches in one forward.
           Parallel and linear heads never see the tokens, so head k's candidates are the same after
           every branch, as in Medusa's Cartesian trees.
2. verify: ONE main forward over [root, node 1, ..., node N]. Node j sits at RoPE position n + depth(j),
           its place in the text if its path is accepted (not its index in the flat list), and attends to
           the committed cache plus path(j): `tree_mask`, row j = row parents[j] OR e_j. Its logits are
           P^0 after path(j), as a plain causal forward over prompt + path(j) gives (tests/test_tree.py).
3. accept: `walk` from the root: try the current node's children in order; move to an accepted child,
           or stop and add one main-model token, the correction (or the bonus at a leaf).
4. keep:   only the accepted path stays, in the main cache and in every module cache, moved to
           contiguous positions (`KVCache.keep`, applied in `TreeDecoder.keep_path`).

Rules. Each child is judged by the chain's own rule, `decoding._Rule.accept` on a one-draft chain:
- "greedy": a child is accepted iff it is the main argmax. The output is identical to `generate` greedy.
- "sample": SpecInfer's multi-round rejection sampling with q one-hot, since the drafts are
  deterministic top-k candidates: accept child x with probability p_res(x); on rejection set
  p_res(x) = 0 and renormalise; when every child is rejected, draw from p_res (p_res starts as p).
  Lossless: child i is emitted with probability p_i(x_i), and otherwise the rest is emitted as p_{i+1},
  so by induction every token y comes out with probability p_i(y) = p(y) (`without`).
- "threshold": lossy; accept the first child whose p exceeds the threshold ('Complete Guide' tutorial).

Shapes. `TreeSpec.from_widths((3, 2, 1))`: the top-3 candidates at depth 1, the top-2 after each, the top-1
after each of those (15 nodes). `TreeSpec.from_paths(choices)`: Medusa's format, one list of candidate
ranks per node. `DynamicTree(budget, top_k)`: EAGLE-2's expand-then-rerank tree, grown anew every step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .checks import check_int
from .decoding import _budget, _eval_mode, _generator, _Rule, check_speculative_args, target_probs
from .drafting import DecodeState, MTPDrafter
from .model import KVCache, MTPModel
from .traces import TreeStep, TreeTrace


# ---- the tree as a parent array: mask and positions ---------------------------------------------------
def tree_mask(parents: Sequence[int]) -> torch.Tensor:
    """(N, N) bool: entry [j, i] says whether node j may attend to node i, i.e. whether i is j or one of
    its ancestors. Built row by row: row j = row parents[j] OR e_j. A parent of -1 means none in this list."""
    mask = torch.eye(len(parents), dtype=torch.bool)
    for j, p in enumerate(parents):
        if not -1 <= p < j:
            raise ValueError(f"parents[{j}]={p}: a parent must be an earlier node (or -1 for none)")
        if p >= 0:
            mask[j] |= mask[p]                        # row p is complete already: p < j
    return mask


def tree_depths(parents: Sequence[int]) -> list[int]:
    """depth(j) = depth(parents[j]) + 1; nodes without a parent (-1) have depth 0."""
    depths: list[int] = []
    for j, p in enumerate(parents):
        if not -1 <= p < j:
            raise ValueError(f"parents[{j}]={p}: a parent must be an earlier node (or -1 for none)")
        depths.append(0 if p < 0 else depths[p] + 1)
    return depths


def verify_layout(parents: Sequence[int], prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The verify forward's RoPE positions (prefix + depth) and its (N, prefix + N) attention mask:
    every node sees the `prefix` committed cache entries, then its ancestors and itself."""
    positions = torch.tensor([prefix + d for d in tree_depths(parents)])
    mask = torch.cat([torch.ones(len(parents), prefix, dtype=torch.bool), tree_mask(parents)], dim=1)
    return positions, mask


# ---- tree shapes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TreeSpec:
    """A static tree shape. parents[0] = -1 is the root (the pending token). Node j >= 1 is its parent's
    ranks[j]-th most likely continuation under the drafter (0 = the top-1 candidate). Nodes are numbered
    depth by depth, the order in which they are drafted."""
    parents: tuple[int, ...]
    ranks: tuple[int, ...]
    label: str = field(default="", compare=False)

    def __post_init__(self):
        parents, ranks = tuple(self.parents), tuple(self.ranks)
        if not parents or parents[0] != -1:
            raise ValueError("a tree's parents[0] must be -1: node 0 is the root (the pending token)")
        if len(ranks) != len(parents):
            raise ValueError(f"a tree needs one rank per node: {len(parents)} parents, {len(ranks)} ranks")
        for j, (p, r) in enumerate(zip(parents[1:], ranks[1:]), 1):
            if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < j:
                raise ValueError(f"node {j}: parent {p!r} must be an earlier node (0 <= parent < {j})")
            if isinstance(r, bool) or not isinstance(r, int) or r < 0:
                raise ValueError(f"node {j}: rank {r!r} must be an integer >= 0 (0 = the top-1 candidate)")
        depths = tree_depths(parents)
        if depths != sorted(depths):
            raise ValueError("number the nodes depth by depth: a node may not come after a deeper one")
        seen = set()
        for p, r in zip(parents[1:], ranks[1:]):
            if (p, r) in seen:
                raise ValueError(f"node {p} has two children of rank {r}: siblings must be different candidates")
            seen.add((p, r))
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "ranks", ranks)

    @classmethod
    def from_widths(cls, widths: Sequence[int]) -> "TreeSpec":
        """(3, 2, 1): the top-3 candidates at depth 1, the top-2 after each of them, the top-1 after each of
        those. (1, 1, 1) is the chain that `speculative_generate` drafts."""
        if not isinstance(widths, (list, tuple)) or not widths:
            raise ValueError(f"tree widths must be a non-empty list of counts per depth, like (3, 2, 1); "
                             f"got {widths!r}")
        for k, w in enumerate(widths, 1):
            check_int(f"tree width at depth {k}", w, minimum=1, note="candidates after each node of the depth above")
        parents, ranks, frontier = [-1], [0], [0]
        for w in widths:
            nxt = []
            for u in frontier:
                for r in range(w):
                    parents.append(u)
                    ranks.append(r)
                    nxt.append(len(parents) - 1)
            frontier = nxt
        return cls(tuple(parents), tuple(ranks), label=str(tuple(widths)))

    @classmethod
    def from_paths(cls, paths: Sequence[Sequence[int]]) -> "TreeSpec":
        """Medusa's tree format ("medusa_choices"): one list of candidate ranks per node, from depth 1 down;
        [0, 1] is the top-2 continuation of the top-1 candidate. Every prefix of a path must be a path too.
        The nodes are sorted as Medusa's `generate_medusa_buffers` sorts them: by length, then by value."""
        if not isinstance(paths, (list, tuple)) or not paths:
            raise ValueError(f"tree paths must be a non-empty list of rank lists, like [[0], [1], [0, 0]]; "
                             f"got {paths!r}")
        clean = []
        for path in paths:
            if (not isinstance(path, (list, tuple)) or not path
                    or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in path)):
                raise ValueError(f"tree path {path!r} must be a non-empty list of ranks >= 0")
            clean.append(tuple(path))
        if len(set(clean)) != len(clean):
            raise ValueError("a tree path is listed twice")
        order = sorted(clean, key=lambda p: (len(p), p))
        index = {(): 0}
        parents, ranks = [-1], [0]
        for path in order:
            if path[:-1] not in index:
                raise ValueError(f"tree path {list(path)} needs its parent {list(path[:-1])} in the tree too")
            index[path] = len(parents)
            parents.append(index[path[:-1]])
            ranks.append(path[-1])
        return cls(tuple(parents), tuple(ranks), label=f"paths ({len(order)} nodes)")

    @property
    def depths(self) -> list[int]:
        return tree_depths(self.parents)

    @property
    def depth(self) -> int:
        return max(self.depths)

    @property
    def size(self) -> int:
        """Drafted nodes (the root excluded)."""
        return len(self.parents) - 1

    def paths(self) -> list[tuple[int, ...]]:
        """Each node's ranks from depth 1 down (the root: ()), Medusa's format."""
        out: list[tuple[int, ...]] = [()]
        for p, r in zip(self.parents[1:], self.ranks[1:]):
            out.append(out[p] + (r,))
        return out

    def mask(self) -> torch.Tensor:
        return tree_mask(self.parents)

    def position_ids(self) -> list[int]:
        """Each node's position past the prefix: its depth (Medusa's medusa_position_ids)."""
        return self.depths

    def retrieve_indices(self) -> list[list[int]]:
        """Medusa's retrieve_indices: the nodes of every root-to-leaf path, leaves taken from the last node
        back, padded with -1 to the longest path."""
        kids = {p for p in self.parents[1:]}
        rows = []
        for leaf in reversed(range(1, len(self.parents))):
            if leaf in kids:
                continue
            path = [leaf]
            while self.parents[path[-1]] != -1:
                path.append(self.parents[path[-1]])
            rows.append(path[::-1])
        width = max(len(r) for r in rows)
        return [r + [-1] * (width - len(r)) for r in rows]

    def describe(self) -> str:
        return self.label or f"tree ({self.size} nodes)"

    # what the decoder asks of a shape
    def children(self, tree: "DraftTree", k: int) -> list[tuple[int, int]]:
        """(parent, rank) of each depth-k node, in the spec's order (drafted nodes keep the spec's numbers)."""
        depths = self.depths
        return [(p, r) for p, r, d in zip(self.parents, self.ranks, depths) if d == k]

    def finish(self, tree: "DraftTree") -> tuple["DraftTree", list[int]]:
        return tree, list(range(len(tree.tokens)))

    def max_nodes(self, depth: int) -> int:
        """The most nodes a step drafts, the root included."""
        return len(self.parents)


@dataclass(frozen=True)
class DynamicTree:
    """EAGLE-2's dynamic draft tree, grown anew at every step from the drafter's confidence.

    value(node) = the product of the drafter's probabilities along its path (how likely the whole path
    is to be accepted, if the drafter is calibrated). Expansion: at each depth the top_k most valuable
    nodes of the depth above get their top_k candidates. Reranking: the `budget` most valuable nodes are
    verified; a child's value never exceeds its parent's, so they form a tree. depth None = D."""
    budget: int
    top_k: int = 3
    depth: int | None = None

    def __post_init__(self):
        check_int("DynamicTree.budget", self.budget, minimum=1, note="drafted nodes verified per step")
        check_int("DynamicTree.top_k", self.top_k, minimum=1, note="nodes expanded per depth, candidates per node")
        check_int("DynamicTree.depth", self.depth, minimum=1, optional=True, note="None = D")

    def describe(self) -> str:
        return f"dynamic(budget={self.budget}, top_k={self.top_k}" + (
            f", depth={self.depth})" if self.depth is not None else ")")

    def children(self, tree: "DraftTree", k: int) -> list[tuple[int, int]]:
        frontier = [j for j, d in enumerate(tree.depths) if d == k - 1]
        best = sorted(sorted(frontier, key=lambda j: (-tree.value[j], j))[:self.top_k])
        return [(u, r) for u in best for r in range(self.top_k)]

    def finish(self, tree: "DraftTree") -> tuple["DraftTree", list[int]]:
        ranked = sorted(range(1, len(tree.tokens)), key=lambda j: (-tree.value[j], j))
        return tree.subset([0] + sorted(ranked[:self.budget]))

    def max_nodes(self, depth: int) -> int:
        """The most nodes a step drafts before reranking, the root included."""
        return 1 + self.top_k + (depth - 1) * self.top_k * self.top_k


TreeShape = TreeSpec | DynamicTree


def as_tree_shape(tree) -> TreeShape:
    """A TreeSpec or DynamicTree from what tree_generate accepts: widths per depth like (3, 2, 1),
    Medusa-style paths like [[0], [1], [0, 0]], a TreeSpec, or a DynamicTree."""
    if isinstance(tree, (TreeSpec, DynamicTree)):
        return tree
    if isinstance(tree, (list, tuple)) and tree and all(isinstance(w, int) and not isinstance(w, bool) for w in tree):
        return TreeSpec.from_widths(tree)
    if isinstance(tree, (list, tuple)) and tree and all(isinstance(p, (list, tuple)) for p in tree):
        return TreeSpec.from_paths(tree)
    raise ValueError(f"tree={tree!r} is not a tree shape: give widths per depth like (3, 2, 1), Medusa-style "
                     f"paths like [[0], [1], [0, 0]], a TreeSpec, or DynamicTree(budget=...)")


# ---- the tree being drafted ----------------------------------------------------------------------------------
@dataclass
class DraftTree:
    """A step's tree while it is drafted: node 0 is the root (the pending token)."""
    tokens: list[int]
    parents: list[int]
    depths: list[int]
    q: list[float]                  # the drafter's probability of each token (root: 1)
    value: list[float]              # product of q along the path (root: 1)

    @classmethod
    def root(cls, token: int) -> "DraftTree":
        return cls([token], [-1], [0], [1.0], [1.0])

    def add(self, parent: int, token: int, q: float) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        self.depths.append(self.depths[parent] + 1)
        self.q.append(q)
        self.value.append(self.value[parent] * q)
        return len(self.tokens) - 1

    def path(self, j: int) -> list[int]:
        """root, ..., j."""
        out = [j]
        while self.parents[out[-1]] >= 0:
            out.append(self.parents[out[-1]])
        return out[::-1]

    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in self.tokens]
        for j, p in enumerate(self.parents[1:], 1):
            kids[p].append(j)
        return kids

    def subset(self, keep: list[int]) -> tuple["DraftTree", list[int]]:
        """The nodes `keep` (ancestor-closed, increasing, root first), renumbered; and their old numbers."""
        new = {old: i for i, old in enumerate(keep)}
        sub = DraftTree([self.tokens[j] for j in keep], [new.get(self.parents[j], -1) for j in keep],
                        [self.depths[j] for j in keep], [self.q[j] for j in keep], [self.value[j] for j in keep])
        return sub, keep


# ---- drafting with the MTP modules -------------------------------------------------------------------------
class TreeDrafter(MTPDrafter):
    """The MTP modules as a tree drafter. MTPDrafter's depth check, module choice per depth, KV caches and
    hidden-state buffers (`inputs[k-1]`: what depth k reads, by position) are reused as they are.

    A module k cache holds true entries only: positions 0..c-1, each reading an accepted token. At a step
    (n accepted tokens; the pending token, the root, at index n):
    - catch-up: positions c .. n-k-1 read accepted tokens only, as in the chain;
    - tree entries (sequential): module k's entry for a node v of depth j sits at position n-k+j. It reads
      token(v) and h^{k-1} of module k-1's entry for v's parent (for the root: position n-k), and it
      predicts v's children. Module k runs on the nodes it expands (depth k-1) and their ancestors,
      under the tree mask, in one forward.
    `keep_path` then keeps only the accepted path's entries (KVCache.keep) and writes their h^k into the
    buffer for depth k+1. Parallel and linear heads read h^0 alone and never hold tree entries.
    """

    def start(self, model: MTPModel, state: DecodeState, depth: int, spare: int = 0) -> None:
        super().start(model, state, depth)
        p = next(model.parameters())
        # room past max_seq_len for one step's tree entries (their positions stay below max_seq_len)
        self.caches = [None if c is None else KVCache(1, c.k.shape[1], c.k.shape[3], c.max_len + spare,
                                                      p.device, p.dtype) for c in self.caches]
        self.begin()

    def begin(self) -> None:
        """Forget the last step's tree entries."""
        self.tree_h: dict[int, dict[int, torch.Tensor]] = {}    # depth k -> node -> h^k of its entry
        self.ran: dict[int, tuple[int, list[int]]] = {}         # depth k -> (first tree slot, nodes in slot order)
        self.forwards = 0

    def logits(self, state: DecodeState, tree: DraftTree, k: int, expand: list[int]) -> torch.Tensor:
        """Depth k's logits after each node in `expand` (all of depth k-1): (len(expand), V)."""
        model, module, cache, n = self.model, self.module[k - 1], self.caches[k - 1], state.n
        self.forwards += 1
        if not self.sequential:                       # the chain's call: h^0 up to the frontier n-1
            start = n - 1 if cache is None else cache.length
            h = model.mtp_hidden(module, self.inputs[k - 1][:, start:n], None, cache)
            return model.head_logits(module, h[0, -1]).expand(len(expand), -1)
        # module k's queries, in one forward: first the catch-up positions c .. first-1, which read accepted
        # tokens only; then one tree entry per node on the way to `expand` (ancestors included), node v at
        # position n-k+depth(v) (where that is >= 0), reading token(v) and h^{k-1} of its parent's entry
        c, first = cache.length, max(n - k, 0)
        nodes = sorted({a for u in expand for a in tree.path(u) if n - k + tree.depths[a] >= 0})
        slot = {v: i for i, v in enumerate(nodes)}
        h_prev = [self.inputs[k - 1][0, c:first]] + [
            (self.inputs[k - 1][0, n - k] if v == 0 else self.tree_h[k - 1][tree.parents[v]])[None] for v in nodes]
        tokens = torch.cat([state.tokens[c + k:first + k], state.tokens.new_tensor([tree.tokens[v] for v in nodes])])
        positions = torch.cat([torch.arange(c, first), torch.tensor([n - k + tree.depths[v] for v in nodes])])
        T, done = len(tokens), first - c
        mask = torch.ones(T, c + T, dtype=torch.bool)                         # everyone sees the c cached entries
        mask[:done, c:] = torch.ones(done, T, dtype=torch.bool).tril()        # catch-up: causal, no tree
        mask[done:, c + done:] = tree_mask([slot.get(tree.parents[v], -1) for v in nodes])   # tree: ancestors
        device = state.tokens.device
        h = model.mtp_hidden(module, torch.cat(h_prev)[None], tokens[None], cache, positions.to(device),
                             None if T == 1 else mask.to(device))             # (1, T, d)
        if k < len(self.inputs):
            self.inputs[k][:, c:first] = h[:, :done]                           # true h^k, read by depth k+1
        self.tree_h[k] = {v: h[0, done + i] for i, v in enumerate(nodes)}
        self.ran[k] = (first, nodes)
        return torch.stack([model.head_logits(module, self.tree_h[k][u]) for u in expand])

    def keep_path(self, path: list[int]) -> None:
        """path: the accepted nodes, root first (drafting numbers). Each module keeps its entries for them."""
        for k, (first, nodes) in self.ran.items():
            slot = {v: i for i, v in enumerate(nodes)}
            kept = [v for v in path if v in slot]                               # a run from the root down
            self.caches[k - 1].keep(first, [slot[v] for v in kept])
            if kept and k < len(self.inputs):
                self.inputs[k][0, first:first + len(kept)] = torch.stack([self.tree_h[k][v] for v in kept])

    def draft(self, *args, **kwargs):
        raise NotImplementedError("TreeDrafter drafts through TreeDecoder.draft")

    def rollback(self, state: DecodeState) -> None:
        raise NotImplementedError("TreeDrafter keeps the accepted path with keep_path")


# ---- acceptance: the chain's rule, one child at a time --------------------------------------------------
def without(p: torch.Tensor, token: int) -> torch.Tensor:
    """p with `token`'s probability removed and the rest renormalised (p itself if nothing is left)."""
    rest = p.clone()
    rest[token] = 0
    total = rest.sum()
    return rest / total if total > 0 else p


def try_children(judge: _Rule, logits: torch.Tensor, p: torch.Tensor,
                 tokens: list[int]) -> tuple[int | None, int | None]:
    """The children of one node, in order. Each is judged by the chain's rule as a one-draft chain with
    q one-hot; for "sample" the rejected token's mass leaves p_res before the next child (SpecInfer).
    Returns (index of the accepted child, None) or (None, the main model's correction)."""
    residual, extra = p, None
    for i, t in enumerate(tokens):
        draft = torch.tensor([t], device=logits.device)
        q = torch.zeros_like(p).scatter_(0, draft, 1.0)[None]                   # a deterministic draft
        a, extra = judge.accept(logits.expand(2, -1), draft, q, residual.expand(2, -1))
        if a == 1:
            return i, None
        if judge.name == "sample":
            residual = without(residual, t)
    return None, int(extra)


def walk(judge: _Rule, logits: torch.Tensor, p: torch.Tensor, children: list[list[int]],
         tokens: list[int]) -> tuple[list[int], int, str]:
    """From the root down: (accepted nodes, the extra token, "correction" or "bonus").
    logits, p: (N+1, V), the main model's logits and acceptance distribution after every node."""
    cur, path = 0, []
    while children[cur]:
        child, extra = try_children(judge, logits[cur], p[cur], [tokens[c] for c in children[cur]])
        if child is None:
            return path, extra, "correction"
        cur = children[cur][child]
        path.append(cur)
    none = torch.zeros(0, dtype=torch.long, device=logits.device)
    _, bonus = judge.accept(logits[cur:cur + 1], none, p[:0], p[cur:cur + 1])          # the chain's bonus
    return path, int(bonus), "bonus"


# ---- the decoder -------------------------------------------------------------------------------------------
class TreeDecoder:
    """Tree-drafting decoding, one step at a time: the prefill runs at construction, then each `step()`
    drafts, verifies, accepts and keeps the path (module docstring). `tree_generate` loops over it; the
    notebooks and tests call `step()` to look inside. Arguments as for `tree_generate`."""

    def __init__(self, model: MTPModel, prompt_ids, max_new_tokens: int, tree=(3, 2, 1), rule: str = "greedy",
                 temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 threshold: float = 0.5, seed: int | None = 0, experimental_reuse_modules: bool = False):
        prompt = check_speculative_args(model, prompt_ids, max_new_tokens, rule, temperature, top_k, top_p,
                                        threshold, seed)
        cfg = model.config
        self.model, self.shape = model, as_tree_shape(tree)
        depth = self.shape.depth if self.shape.depth is not None else cfg.mtp_depth
        if 0 < cfg.mtp_depth < depth and not experimental_reuse_modules:
            raise ValueError(f"the tree {self.shape.describe()} is {depth} deep, but this model has "
                             f"D={cfg.mtp_depth} MTP modules: use a tree at most {cfg.mtp_depth} deep, or "
                             f"experimental_reuse_modules=True (sequential style only) to reuse the modules "
                             f"cyclically as vLLM does")
        self.drafter = TreeDrafter(experimental_reuse_modules)
        self.depth = self.drafter.check_depth(model, depth)
        widest = max(self.shape.ranks) + 1 if isinstance(self.shape, TreeSpec) else self.shape.top_k
        if widest > cfg.vocab_size:
            raise ValueError(f"the tree {self.shape.describe()} asks for the top-{widest} candidates, but the "
                             f"vocabulary has {cfg.vocab_size} tokens")
        self.prompt, self.budget, self.emitted = prompt, _budget(model, len(prompt), max_new_tokens), 0
        self.trace = TreeTrace(prompt=prompt, rule=rule, draft_depth=self.depth, lossy=rule == "threshold",
                               tree=self.shape.describe())
        if self.budget == 0:
            return
        p = next(model.parameters())
        self.judge = _Rule(rule, temperature, top_k, top_p, threshold, _generator(p.device, seed))
        spare = self.shape.max_nodes(self.depth)
        with _eval_mode(model):
            hd = cfg.d_model // cfg.n_heads
            self.caches = [KVCache(1, cfg.n_heads, hd, cfg.max_seq_len + spare, p.device, p.dtype)
                           for _ in model.blocks]
            n = len(prompt)
            self.state = DecodeState(torch.tensor(prompt + [0] * self.budget, device=p.device),
                                     torch.empty(1, cfg.max_seq_len, cfg.d_model, device=p.device, dtype=p.dtype), n)
            self.drafter.start(model, self.state, self.depth, spare)
            h = model.trunk(self.state.tokens[:n].view(1, n), self.caches)             # prefill
            self.state.h0[:, :n] = h
            self.state.tokens[n] = self.judge.pick(model.head_logits(0, h[0, -1]))
            self.trace.first_token = int(self.state.tokens[n])
            self.emitted = 1

    @property
    def done(self) -> bool:
        return self.emitted >= self.budget

    def tokens(self) -> list[int]:
        """The generated tokens so far (prompt excluded)."""
        if self.budget == 0:
            return []
        return self.state.tokens[len(self.prompt):len(self.prompt) + self.emitted].tolist()

    def step(self) -> TreeStep:
        """One draft-verify-accept-keep round; appends its TreeStep to the trace and returns it."""
        if self.done:
            raise ValueError("nothing left to generate: max_new_tokens (or the context limit) is reached")
        limit = min(self.depth, self.budget - self.emitted - 1)     # never run past max_new_tokens
        with _eval_mode(self.model):
            tree, drafted_as = self.draft(limit)
            logits, h = self.verify(tree)
            p = self.judge.probs(logits)                                               # (N+1, V), shown
            p_accept = target_probs(logits, 0.0) if self.judge.name == "sample" and self.judge.temperature == 0 else p
            path, extra, kind = walk(self.judge, logits, p_accept, tree.children(), tree.tokens)
            self.keep_path(tree, drafted_as, path, h, extra)
            rows = torch.tensor(tree.parents[1:], dtype=torch.long, device=p.device)
            cols = torch.tensor(tree.tokens[1:], dtype=torch.long, device=p.device)
            step = TreeStep(tokens=list(tree.tokens), parents=list(tree.parents), q=list(tree.q),
                            p=[1.0] + p[rows, cols].tolist(), path=path, extra_token=extra, extra_kind=kind,
                            main_forwards=1, draft_forwards=self.drafter.forwards)
        self.trace.steps.append(step)
        self.emitted += len(path) + 1
        return step

    def draft(self, limit: int) -> tuple[DraftTree, list[int]]:
        """Grow the tree depth by depth, at most `limit` deep; returns it and each node's drafting number."""
        state, drafter = self.state, self.drafter
        drafter.begin()
        tree = DraftTree.root(int(state.tokens[state.n]))
        for k in range(1, limit + 1):
            wanted = self.shape.children(tree, k)                   # [(parent, rank)], in drafting order
            if not wanted:
                break
            expand = sorted({u for u, _ in wanted})
            logits = drafter.logits(state, tree, k, expand)           # (len(expand), V)
            q = self.judge.probs(logits)
            top = logits.topk(max(r for _, r in wanted) + 1, dim=-1).indices
            row = {u: i for i, u in enumerate(expand)}
            for u, r in wanted:
                token = int(top[row[u], r])
                tree.add(u, token, float(q[row[u], token]))
        return self.shape.finish(tree)

    def verify(self, tree: DraftTree) -> tuple[torch.Tensor, torch.Tensor]:
        """ONE main forward over [root, node 1, ..., node N] under the tree mask: logits (N+1, V), h (1, N+1, d)."""
        n, device = self.state.n, self.state.tokens.device
        positions, mask = verify_layout(tree.parents, n)
        ids = torch.tensor(tree.tokens, device=device).view(1, -1)
        h = self.model.trunk(ids, self.caches, positions.to(device), None if len(tree.tokens) == 1 else mask.to(device))
        return self.model.head_logits(0, h[0]), h

    def keep_path(self, tree: DraftTree, drafted_as: list[int], path: list[int], h: torch.Tensor, extra: int) -> None:
        """Only the accepted path stays. Its entries move to contiguous positions n, n+1, ... in every main
        cache (the verify forward appended node j at slot n + j), its h^0 and tokens go into the buffers,
        and each module cache keeps its own entries for the path (TreeDrafter.keep_path)."""
        state, nodes = self.state, [0] + path
        n = state.n
        for cache in self.caches:
            cache.keep(n, nodes)
        state.h0[:, n:n + len(nodes)] = h[:, nodes]
        state.tokens[n + 1:n + len(nodes)] = state.tokens.new_tensor([tree.tokens[j] for j in path])
        state.n = n + len(nodes)
        state.tokens[state.n] = extra                                 # the new pending token
        self.drafter.keep_path([drafted_as[j] for j in nodes])


def tree_generate(model: MTPModel, prompt_ids, max_new_tokens: int, tree=(3, 2, 1), rule: str = "greedy",
                  temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                  threshold: float = 0.5, seed: int | None = 0,
                  experimental_reuse_modules: bool = False) -> tuple[list[int], TreeTrace]:
    """Speculative decoding with a draft tree: the MTP modules draft several candidates per depth, ONE
    main forward verifies all of them (module docstring).

    tree: widths per depth like (3, 2, 1) (a chain is (1, 1, 1)), Medusa-style paths like
    [[0], [1], [0, 0]], a TreeSpec, or DynamicTree(budget, top_k) (EAGLE-2). At most D deep, unless
    experimental_reuse_modules=True (sequential style only; depth k reuses module ((k-1) mod D) + 1).
    rule, temperature, top_k, top_p, threshold, seed: as for `speculative_generate`. "greedy" output is
    identical to `generate` greedy; "sample" output is distributed exactly as `generate`'s sampling (its
    drafts are the deterministic top-k candidates, so a chain tree samples differently from
    speculative_generate's sampled drafts, while both are exact); "threshold" is lossy.

    Returns max_new_tokens generated tokens (fewer only at the context limit, with a ContextLimitWarning)
    and a `TreeTrace`: one TreeStep per verification forward (the tree, q, p, the accepted path).
    """
    decoder = TreeDecoder(model, prompt_ids, max_new_tokens, tree, rule, temperature, top_k, top_p, threshold,
                          seed, experimental_reuse_modules)
    while not decoder.done:
        decoder.step()
    return decoder.tokens(), decoder.trace
