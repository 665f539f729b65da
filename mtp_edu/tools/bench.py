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
units of one plain decoding step's time) plus the drafts (c_d = sum of the c_k), and emits tau
tokens, so the speed-up is about S = tau / (c_v + c_d). The benchmark times every verify forward and
every draft during the speculative runs (perf_counter around each call), predicts S from them and
prints it beside the measured S; what separates the two is the decoding logic around the forwards.
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

from ..cli import ArgumentParser, UserError, _number, _positive_int, check_output_file
from ..config import MTPConfig
from ..data import ByteTokenizer, stdlib_corpus
from ..decoding import compile_for_decoding, generate, speculative_generate
from ..drafting import MTPDrafter
from ..machine import hardware_description, load_average
from ..model import MTPModel
from ..traces import Trace, TreeTrace
from ..tree import DynamicTree, TreeDrafter, tree_generate

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


DRAFT_CALLS = ((MTPDrafter, "draft"), (TreeDrafter, "logits"))   # the chain's and the tree's drafting


class ForwardClock:
    """While a run is timed through `run`, adds up the seconds of every trunk forward except the
    run's first (its prefill: the verify forwards) and of every MTP draft: the speed model's inputs."""

    def __init__(self, model: MTPModel):
        self.model, self.verify_s, self.draft_s, self._active, self._prefill = model, 0.0, 0.0, False, False

    def __enter__(self):
        trunk, clock = self.model.trunk, self

        def timed_trunk(*args, **kwargs):
            out, seconds = _timed(trunk, *args, **kwargs)
            if clock._active and not clock._prefill:
                clock.verify_s += seconds
            clock._prefill = False
            return out

        def timing(draft):
            def timed_draft(drafter, *args, **kwargs):
                out, seconds = _timed(draft, drafter, *args, **kwargs)
                clock.draft_s += seconds if clock._active else 0.0
                return out
            return timed_draft
        self._saved = vars(self.model).get("trunk"), [getattr(cls, name) for cls, name in DRAFT_CALLS]
        self.model.trunk = timed_trunk                     # a compiled model binds its own trunk: saved above
        for (cls, name), draft in zip(DRAFT_CALLS, self._saved[1]):
            setattr(cls, name, timing(draft))
        return self

    def run(self, fn, *args, **kwargs):
        """(fn(...), seconds), with this run's verify and draft seconds in verify_s and draft_s."""
        self.verify_s = self.draft_s = 0.0
        self._active = self._prefill = True
        try:
            return _timed(fn, *args, **kwargs)
        finally:
            self._active = False

    def __exit__(self, *exc):
        trunk, drafts = self._saved
        for (cls, name), draft in zip(DRAFT_CALLS, drafts):
            setattr(cls, name, draft)
        if trunk is None:
            del self.model.trunk
        else:
            self.model.trunk = trunk


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
    the speed model (module docstring). Both sides of a pair draw with the same seed.

    Every depth must lie in 1..D, the model's MTP modules (ValueError otherwise): a depth beyond D
    would need modules reused cyclically (speculative_generate's experimental_reuse_modules), which
    this benchmark does not measure."""
    D = model.config.mtp_depth
    beyond = [d for d in depths if not 1 <= d <= D]
    if beyond:
        raise ValueError(f"draft depths {beyond} are not in 1..D for this model, which has D = {D} MTP modules"
                         + ("" if D else " (a next-token model: prompt lookup only, give no depths)"))
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
    runs = {name: {"speed": [], "ratio": [], "identical": 0, "steps": [], "verify_s": 0.0, "draft_s": 0.0,
                   "plain_s": 0.0, "plain_tokens": 0} for name, _ in variants}
    _, warmup_s = _timed(lambda: (generate(model, prompts[0], 8),             # warm-up (and compile)
                                  speculative_generate(model, prompts[0], 32)))
    with ForwardClock(model) as clock:
        for round_ in range(rounds):
            for j, prompt in enumerate(prompts):
                for name, kwargs in variants:
                    seed = 1000 * round_ + j
                    reference, t_a = _timed(generate, model, prompt, new_tokens, temperature=temperature, seed=seed)
                    decode = tree_generate if "tree" in kwargs else speculative_generate
                    (tokens, trace), t_b = clock.run(decode, model, prompt, new_tokens, rule=rule,
                                                     temperature=temperature, seed=seed, **kwargs)
                    r = runs[name]
                    base_speed.append(len(reference) / t_a)
                    r["speed"].append(len(tokens) / t_b)
                    r["ratio"].append(t_a / t_b * len(tokens) / len(reference))
                    r["identical"] += tokens == reference
                    r["steps"] += trace.steps
                    r["verify_s"], r["draft_s"] = r["verify_s"] + clock.verify_s, r["draft_s"] + clock.draft_s
                    r["plain_s"], r["plain_tokens"] = r["plain_s"] + t_a, r["plain_tokens"] + len(reference)
    result = {"rule": rule, "temperature": temperature, "baseline_tokens_per_s": statistics.median(base_speed),
              "warmup_s": warmup_s, "variants": []}
    for name, _ in variants:
        r = runs[name]
        trace = (TreeTrace if "tree" in dict(variants)[name] else Trace)(prompt=[], rule=rule, draft_depth=0,
                                                                         steps=r["steps"])   # all runs' steps
        step_unit = r["plain_s"] / r["plain_tokens"] * len(r["steps"])        # plain-step seconds x steps
        c_verify, c_drafts = r["verify_s"] / step_unit, r["draft_s"] / step_unit
        result["variants"].append({
            "name": name, "tokens_per_s": statistics.median(r["speed"]), "speedup": statistics.median(r["ratio"]),
            "pair_speedups": [round(x, 3) for x in r["ratio"]],
            "tau": trace.tau(), "acceptance_per_depth": trace.acceptance_per_depth(),
            "nodes_per_step": trace.nodes_per_step() if isinstance(trace, TreeTrace) else
            statistics.mean(len(s.drafted) for s in r["steps"]),
            "expected_tokens": trace.expected_tokens(), "accepted_histogram": trace.accepted_histogram(),
            "speed_model": {"c_verify": c_verify, "c_drafts": c_drafts,
                            "predicted_speedup": trace.tau() / (c_verify + c_drafts)},
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
    parser.add_argument("--prompts", type=_positive_int, default=6, help="prompts per model (default 6)")
    parser.add_argument("--prompt-tokens", type=_positive_int, default=64, help="tokens per prompt (default 64)")
    parser.add_argument("--new-tokens", type=_positive_int, default=128, help="tokens generated per run (default 128)")
    parser.add_argument("--rounds", type=_positive_int, default=2, help="passes over the prompts (default 2)")
    parser.add_argument("--min-confidence", type=_number(float, 0, maximum=1), default=0.3,
                        help="also run the deepest MTP variant with dynamic draft length: stop drafting once "
                             "q(d_1)...q(d_k) < this (default 0.3; 0 = skip)")
    parser.add_argument("--rule", choices=["greedy", "sample"], default="greedy",
                        help="acceptance rule (default greedy; sample = speculative sampling at --temperature)")
    parser.add_argument("--temperature", type=_number(float, 0), default=None,
                        help="sampling temperature of --rule sample (default 0.8); greedy has none")
    parser.add_argument("--tree", help="also draft trees (sequential/parallel/linear MTP models): widths per depth "
                             "like 3,2,1, or dynamic:BUDGET (EAGLE-2 style), several separated by ';'")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the trunk and the MTP modules (compile_for_decoding) for both sides")
    parser.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default 1, see the docstring)")
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
