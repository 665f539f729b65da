"""Decoding speed: KV-cached `generate` vs self-speculative decoding, measured in one run.

    python -m mtp_edu.tools.bench [--models mtp-seq-d3,mtp-par-d3,mtp-lin-d3] [--depths 1,2,3]
                                  [--rule greedy|sample --temperature T] [--out FILE]
    (also: mtp-edu bench)

For every model, prompt and round the runs alternate: baseline, variant 1, baseline, variant 2, ...
(A B A C ...), so a machine that gets faster or slower (other processes, thermal limits) touches
both sides of every pair alike. Each variant's speed-up is the median over its pairs of
(variant tokens/s) / (the baseline run just before it). Variants: the model's MTP modules at every
draft depth, the deepest again with a dynamic draft length (`min_draft_confidence`), and prompt
lookup (an n-gram copy drafter that needs no training) at the largest depth, and with --tree the
draft trees given (`tree_generate`: several candidates per depth, one verify pass over all of them).
Rules: `greedy` (each run's output must equal the baseline's: "identical"), or `sample` at
--temperature (speculative sampling, lossless in distribution; both sides draw with the same seed,
but their outputs need not agree token for token, so "identical" does not apply). Sampled text
does not repeat itself the way a small model's greedy text can, so it is the honest figure.

The speed model: a step costs one verify forward over the pending token and its drafts (c_v, in
units of one plain decoding step's forward) plus the drafts (c_d = c_1 + ... + c_D, c_k being depth
k's module forward), each with its output head, and emits tau tokens, so the speed-up is about
S = tau / (c_v + c_d). `ForwardClock` times every main-model and module forward (perf_counter around
each call; a run's prefill is not a step) in both runs of a pair: the plain run gives the unit, the
speculative run c_v and the c_k, and the pair its predicted S. S pred is the median of those
predictions, as the measured S is the median of the pairs' speed-ups (c_v and the c_k are medians
too, so S pred is close to, not exactly, tau / (c_v + c_d)). Within a pair, measured / predicted is
the plain run's time over its forwards' times, over the same for the speculative run: what
separates the two is what runs around the forwards (the prefill, picking and accepting tokens,
rolling back caches, the trace; for prompt lookup also its n-gram search, which costs no forward
but is not free), more of it on the speculative side.
With --compile, both sides run through `compile_for_decoding` (torch.compile); the compile time is
paid in the warm-up and reported apart.

Threads: one by default. A decode step is a chain of tiny matmuls, where a second thread adds
synchronisation and competes with everything else on a 2-core machine.
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from ..cli import ArgumentParser, UserError, check_output_file, number_type, positive_int
from ..config import MTPConfig
from ..data import ByteTokenizer, stdlib_corpus
from ..decoding import compile_for_decoding, generate, speculative_generate
from ..machine import hardware_description, load_average
from ..model import MTPModel
from ..traces import Trace, TreeTrace
from ..tree import DynamicTree, tree_generate

DEFAULT_MODELS = ("mtp-seq-d3", "mtp-par-d3", "mtp-lin-d3")
FALLBACK_PROMPTS = (      # used when the standard library's source is not on this machine
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "import os\nimport sys\n\n\ndef main(argv=None):\n    parser = argparse.ArgumentParser(",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n    else:\n        continue\n",
)


def load_model(spec: str):
    """A shipped model name, a checkpoint directory, or random:STYLE (untrained, shipped shapes)."""
    if spec.startswith("random:"):
        cfg = MTPConfig(n_layers=8, mtp_depth=3, mtp_style=spec.split(":", 1)[1])
        return MTPModel(cfg).eval(), ByteTokenizer()
    if Path(spec).is_dir():
        from ..checkpoint import load_checkpoint
        ckpt = load_checkpoint(spec)
        return ckpt.model, ckpt.tokenizer
    from ..pretrained import load_pretrained
    return load_pretrained(spec)


def weights_sha256(spec: str) -> str | None:
    """The sha256 of a shipped model's or a checkpoint's stored weights (None for random:STYLE): which
    weights a stored benchmark measured."""
    from ..checkpoint import read_meta
    from ..pretrained import pretrained_path
    if spec.startswith("random:"):
        return None
    return read_meta(spec if Path(spec).is_dir() else pretrained_path(spec))["files"]["model.safetensors"]["sha256"]


def make_prompts(tokenizer, count: int, length: int) -> list[list[int]]:
    """`count` prompts of `length` tokens from evenly spaced places in the validation split of the
    default corpus (Python standard library files never trained on); fixed snippets otherwise."""
    try:
        ids = tokenizer.encode(stdlib_corpus().val)
    except (ValueError, OSError):
        ids = [t for text in FALLBACK_PROMPTS * 8 for t in tokenizer.encode(text)]
    if len(ids) < length * count:
        ids = ids * (length * count // max(len(ids), 1) + 1)
    stride = (len(ids) - length) // count
    return [ids[i * stride:i * stride + length] for i in range(count)]


def _timed(fn, *args, **kwargs):
    """fn(*args, **kwargs) and the seconds it took."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


class ForwardClock:
    """While a run is timed through `run`, adds up the seconds of the speed model's parts: every main
    model forward with its output head except the run's prefill (`verify_s`: a speculative run's
    verify forwards, a plain run's one-token steps), and every MTP module forward with its head, per
    depth (`draft_s[k - 1]`)."""

    PARTS = ("trunk", "mtp_hidden", "head_logits")      # trunk(x, ...), mtp_hidden(k, ...), head_logits(k, ...)

    def __init__(self, model: MTPModel):
        self.model, self._active = model, False
        self.verify_s, self.draft_s = 0.0, [0.0] * model.config.mtp_depth

    def _timing(self, part, forward):
        def timed(*args, **kwargs):
            out, seconds = _timed(forward, *args, **kwargs)
            k = 0 if part == "trunk" else args[0]          # 0: the main model, k >= 1: MTP module k
            if self._active and k:
                self.draft_s[k - 1] += seconds
            elif self._active and self._prefill:           # the prefill's trunk forward and its head
                self._prefill -= 1
            elif self._active:
                self.verify_s += seconds
            return out
        return timed

    def __enter__(self):
        self._saved = {part: vars(self.model).get(part) for part in self.PARTS}  # a compiled trunk is bound there
        for part in self.PARTS:
            setattr(self.model, part, self._timing(part, getattr(self.model, part)))
        return self

    def run(self, fn, *args, **kwargs):
        """(fn(...), seconds), with this run's verify and per-depth draft seconds in verify_s and draft_s."""
        self.verify_s, self.draft_s = 0.0, [0.0] * len(self.draft_s)
        self._active, self._prefill = True, 2
        try:
            return _timed(fn, *args, **kwargs)
        finally:
            self._active = False

    def __exit__(self, *exc):
        for part, saved in self._saved.items():
            if saved is None:
                delattr(self.model, part)
            else:
                setattr(self.model, part, saved)


def parse_trees(text: str) -> list:
    """'3,2,1;2,2,2;dynamic:8' -> [(3, 2, 1), (2, 2, 2), DynamicTree(8)]: widths per depth, or an
    EAGLE-2 style dynamic tree with a node budget."""
    trees = []
    for spec in text.split(";"):
        kind, _, budget = spec.strip().partition(":")
        try:
            trees.append(DynamicTree(int(budget)) if kind == "dynamic" else tuple(int(w) for w in spec.split(",")))
        except ValueError:
            raise ValueError(f"tree {spec!r} is not a tree: give widths per depth like 3,2,1 or dynamic:BUDGET, "
                             "several separated by ';'") from None
    return trees


def bench_model(model: MTPModel, prompts: list[list[int]], new_tokens: int, depths: list[int],
                rounds: int, min_confidence: float = 0.0, rule: str = "greedy", temperature: float = 0.0,
                trees: list | None = None) -> dict:
    """Alternate baseline / variant runs on every prompt; return per-variant medians, trace stats and
    the speed model (module docstring; c_per_depth: c_1..c_D, 0 for a module the variant never ran).
    Both sides of a pair draw with the same seed.

    Every depth must lie in 1..D, the model's MTP modules (ValueError otherwise): a depth beyond D
    would need modules reused cyclically (speculative_generate's experimental_reuse_modules), which
    this benchmark does not measure."""
    D = model.config.mtp_depth
    beyond = [d for d in depths if not 1 <= d <= D]
    if beyond:
        raise ValueError(f"draft depths {beyond} are not in 1..D for this model, which has D = {D} MTP modules"
                         + ("" if D else " (a next-token model: prompt lookup only, give no depths)"))
    if new_tokens < 2 or any(len(p) + new_tokens > model.config.max_seq_len for p in prompts):
        raise ValueError(f"new_tokens={new_tokens}: need at least 2 (the first comes from the prefill, not a step), "
                         f"and room for them after every prompt in the context of {model.config.max_seq_len} tokens")
    if rule not in ("greedy", "sample") or (rule == "sample") != (temperature > 0):
        raise ValueError(f"rule={rule!r} with temperature={temperature!r}: use greedy at temperature 0, or "
                         "sample at a temperature > 0")
    variants = [(f"mtp d={d}", dict(draft_depth=d)) for d in depths]
    if min_confidence > 0 and depths:
        variants.append((f"mtp d={max(depths)} q>={min_confidence:g}",
                         dict(draft_depth=max(depths), min_draft_confidence=min_confidence)))
    lookup_depth = max(depths, default=3)
    variants.append((f"prompt lookup d={lookup_depth}", dict(drafter="prompt_lookup", draft_depth=lookup_depth)))
    for t in trees or []:
        variants.append((f"tree {f'dynamic:{t.budget}' if isinstance(t, DynamicTree) else ','.join(map(str, t))}",
                         dict(tree=t)))
    base_speed = []
    runs = {name: {"speed": [], "ratio": [], "identical": 0, "steps": [], "c_v": [], "c_k": [], "predicted": []}
            for name, _ in variants}
    _, warmup_s = _timed(lambda: (generate(model, prompts[0], 8),             # warm-up (and compile)
                                  speculative_generate(model, prompts[0], 32)))
    with ForwardClock(model) as clock:
        for round_ in range(rounds):
            for j, prompt in enumerate(prompts):
                for name, kwargs in variants:
                    seed = 1000 * round_ + j
                    reference, t_a = clock.run(generate, model, prompt, new_tokens, temperature=temperature, seed=seed)
                    plain_step = clock.verify_s / (len(reference) - 1)              # one plain step's forward
                    decode = tree_generate if "tree" in kwargs else speculative_generate
                    (tokens, trace), t_b = clock.run(decode, model, prompt, new_tokens, rule=rule,
                                                     temperature=temperature, seed=seed, **kwargs)
                    r = runs[name]
                    base_speed.append(len(reference) / t_a)
                    r["speed"].append(len(tokens) / t_b)
                    r["ratio"].append(t_a / t_b * len(tokens) / len(reference))
                    r["identical"] += tokens == reference
                    r["steps"] += trace.steps
                    per_step = plain_step * len(trace.steps)
                    c_v, c_k = clock.verify_s / per_step, [s / per_step for s in clock.draft_s]
                    r["c_v"].append(c_v)
                    r["c_k"].append(c_k)
                    r["predicted"].append(trace.tau() / (c_v + sum(c_k)))
    result = {"rule": rule, "temperature": temperature, "baseline_tokens_per_s": statistics.median(base_speed),
              "warmup_s": warmup_s, "variants": []}
    for name, _ in variants:
        r = runs[name]
        trace = (TreeTrace if "tree" in dict(variants)[name] else Trace)(prompt=[], rule=rule, draft_depth=0,
                                                                         steps=r["steps"])   # all runs' steps
        c_k = [statistics.median(c[k] for c in r["c_k"]) for k in range(D)]
        result["variants"].append({
            "name": name, "tokens_per_s": statistics.median(r["speed"]), "speedup": statistics.median(r["ratio"]),
            "pair_speedups": [round(x, 3) for x in r["ratio"]],
            "tau": trace.tau(), "acceptance_per_depth": trace.acceptance_per_depth(),
            "nodes_per_step": trace.nodes_per_step() if isinstance(trace, TreeTrace) else
            statistics.mean(len(s.drafted) for s in r["steps"]),
            "expected_tokens": trace.expected_tokens(), "accepted_histogram": trace.accepted_histogram(),
            "speed_model": {"c_verify": statistics.median(r["c_v"]), "c_per_depth": c_k, "c_drafts": sum(c_k),
                            "predicted_speedup": statistics.median(r["predicted"]),
                            "pair_predicted": [round(x, 3) for x in r["predicted"]]},
            "identical": f"{r['identical']}/{len(r['ratio'])}" if rule == "greedy" else "n/a (sampled)"})
    return result


def format_table(results: dict) -> str:
    head = f"{'model':<12} {'variant':<18} {'base tok/s':>10} {'tok/s':>8} {'speedup':>7} {'tau':>5} " \
           f"{'E[tok]':>6}  {'acceptance a_1..a_k':<20} {'c_v':>5} {'c_d':>5} {'S pred':>6} {'nodes':>5}  {'identical'}"
    lines = [head, "-" * len(head)]
    for model_name, res in results.items():
        for v in res["variants"]:
            acc = " ".join("-" if a is None else f"{a:.2f}" for a in v["acceptance_per_depth"])
            sm = v["speed_model"]
            lines.append(f"{model_name:<12} {v['name']:<18} {res['baseline_tokens_per_s']:>10.1f} "
                         f"{v['tokens_per_s']:>8.1f} {v['speedup']:>6.2f}x {v['tau']:>5.2f} "
                         f"{v['expected_tokens']:>6.2f}  {acc:<20} {sm['c_verify']:>5.2f} {sm['c_drafts']:>5.2f} "
                         f"{sm['predicted_speedup']:>5.2f}x {v['nodes_per_step']:>5.1f}  {v['identical']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """The benchmark as a command. Bad arguments, models and files are refused (UserError, exit status 2
    from mtp-edu) before anything is timed; returns 0."""
    parser = ArgumentParser(prog="mtp-edu bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated: shipped model names, checkpoint directories, or random:STYLE")
    parser.add_argument("--depths", help="MTP draft depths to compare, each in 1..D (default: 1..D of each model)")
    parser.add_argument("--prompts", type=positive_int, default=6, help="prompts per model (default 6)")
    parser.add_argument("--prompt-tokens", type=positive_int, default=64, help="tokens per prompt (default 64)")
    parser.add_argument("--new-tokens", default=128,
                        type=number_type(int, 2, note=" (the first comes from the prefill, not a step)"),
                        help="tokens generated per run (default 128)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="passes over the prompts (default 2)")
    parser.add_argument("--min-confidence", type=number_type(float, 0, maximum=1), default=0.3,
                        help="also run the deepest MTP variant with dynamic draft length: stop drafting once "
                             "q(d_1)...q(d_k) < this (default 0.3; 0 = skip)")
    parser.add_argument("--rule", choices=["greedy", "sample"], default="greedy",
                        help="acceptance rule (default greedy; sample = speculative sampling at --temperature)")
    parser.add_argument("--temperature", type=number_type(float, 0), default=None,
                        help="sampling temperature of --rule sample (default 0.8); greedy has none")
    parser.add_argument("--tree", help="also draft trees (sequential/parallel/linear MTP models): widths per depth "
                             "like 3,2,1, or dynamic:BUDGET (EAGLE-2 style), several separated by ';'")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the trunk and the MTP modules (compile_for_decoding) for both sides")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1, see the docstring)")
    parser.add_argument("--out", help="write the results as JSON to this file (checked before the benchmark runs)")
    args = parser.parse_args(argv)
    if args.rule == "greedy" and args.temperature not in (None, 0):
        parser.error("--temperature needs --rule sample (greedy decoding has no temperature)")
    if args.rule == "sample":
        args.temperature = 0.8 if args.temperature is None else args.temperature
        if not args.temperature >= 1e-3:
            parser.error(f"--rule sample needs --temperature >= 0.001, got {args.temperature}")
    try:
        trees = parse_trees(args.tree) if args.tree else []
    except ValueError as e:
        parser.error(f"--tree: {e}")
    depths = None
    if args.depths is not None:
        try:
            depths = [int(d) for d in args.depths.split(",")]
        except ValueError:
            parser.error(f"--depths must be comma-separated integers, got {args.depths!r}")
        if min(depths) < 1:
            parser.error(f"--depths must be >= 1, got {args.depths!r}")
    specs = args.models.split(",")
    if not all(specs):
        parser.error(f"--models has an empty name: {args.models!r}")
    if args.out:
        check_output_file(args.out)
    models = {}
    for spec in specs:                               # every model is loaded and checked before any timing
        try:
            model, tokenizer = load_model(spec)
        except ValueError as e:
            raise UserError(f"--models {spec}: {e}") from None
        D, context = model.config.mtp_depth, model.config.max_seq_len
        if depths is not None and max(depths) > D:
            raise UserError(f"--depths {args.depths}: {spec} has D = {D} MTP modules, so its draft depths are "
                            f"1..{D} (drafting deeper reuses modules: speculative_generate(..., "
                            "experimental_reuse_modules=True), not part of this benchmark)")
        if args.prompt_tokens + args.new_tokens > context:
            raise UserError(f"--prompt-tokens {args.prompt_tokens} + --new-tokens {args.new_tokens} = "
                            f"{args.prompt_tokens + args.new_tokens} tokens do not fit {spec}'s context of "
                            f"{context} tokens")
        models[spec] = (model, tokenizer, depths if depths is not None else list(range(1, D + 1)))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    results, hardware = {}, hardware_description(torch.device("cpu"))
    load = load_average()
    try:
        for spec, (model, tokenizer, model_depths) in models.items():
            if args.compile:
                model = compile_for_decoding(model)
            prompts = make_prompts(tokenizer, args.prompts, args.prompt_tokens)
            print(f"{spec}: {len(prompts)} prompts x {args.rounds} rounds, {args.new_tokens} new tokens ...",
                  file=sys.stderr, flush=True)
            results[spec] = bench_model(model, prompts, args.new_tokens, model_depths, args.rounds,
                                        args.min_confidence, args.rule, args.temperature or 0.0, trees)
            results[spec]["weights_sha256"] = weights_sha256(spec)
            print(f"{spec}: warm-up{' with compile' if args.compile else ''} took "
                  f"{results[spec]['warmup_s']:.1f} s", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads)
    print(format_table(results))
    if args.out:
        command = "python -m mtp_edu.tools.bench " + " ".join(argv if argv is not None else sys.argv[1:])
        report = {"command": command,
                  "machine": {"platform": platform.platform(), "hardware": hardware,
                              "torch": torch.__version__, "threads": args.threads, "load_average_1min": load},
                  "settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": results}
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":                     # through the CLI: its exit statuses and one-line errors
    from mtp_edu.cli import main as cli
    sys.exit(cli(["bench", *sys.argv[1:]]))
