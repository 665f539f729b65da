"""The model card: how a model was made and what it scores, measured on the weights as stored.

`evaluate` gives the per-depth validation loss and top-1 accuracy that training logs and the card
records (and bits per byte, given the tokenizer's byte lengths); the card also stores a small slice
of validation chunks so that anyone can recompute its numbers (`mtp-edu info --verify`).
`quality_report` adds the quality gates of a code model (mtp_edu.quality): bits per byte beside
gzip and xz, greedy output that does not loop, and sampled continuations that parse as Python.
"""
from __future__ import annotations

import platform
import statistics
import warnings

import torch

from . import quality
from .checkpoint import DTYPES
from .config import TrainConfig
from .data import eval_chunks, token_byte_lengths
from .decoding import ContextLimitWarning, generate
from .model import MTPModel
from .shifts import depth_targets


@torch.no_grad()
def evaluate(model: MTPModel, chunks: torch.Tensor, batch_size: int = 16,
             byte_lengths: torch.Tensor | None = None) -> dict[str, float]:
    """Per-depth validation loss (nats/token) and top-1 accuracy over chunks (n, T+1).

    Depth k is scored on its T-k positions of every chunk: loss = summed CE / count, acc = share of
    positions where argmax P^k equals t_{i+k+1}. Returns {'val_loss_k': .., 'val_acc_k': ..}, and
    with `byte_lengths` ((V,) bytes per token) also 'val_bpb_k': summed CE / ln 2 / the bytes of the
    scored targets, comparable across tokenizers and with a compressor's bits per byte.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    D = model.config.mtp_depth
    ce, hits, count, n_bytes = [0.0] * (D + 1), [0] * (D + 1), [0] * (D + 1), [0] * (D + 1)
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start:start + batch_size].to(device)
        out = model(batch[:, :-1])
        for k, logits in enumerate(out.logits):
            target = depth_targets(batch[:, 1:], k)
            logits = logits.float()
            ce[k] += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(),
                                                             reduction="sum"))
            hits[k] += int((logits.argmax(-1) == target).sum())
            count[k] += target.numel()
            if byte_lengths is not None:
                n_bytes[k] += int(byte_lengths[target.cpu()].sum())
    model.train(was_training)
    metrics = {f"val_loss_{k}": ce[k] / count[k] for k in range(D + 1)}
    metrics.update({f"val_acc_{k}": hits[k] / count[k] for k in range(D + 1)})
    if byte_lengths is not None:
        metrics.update({f"val_bpb_{k}": quality.bits_per_byte(ce[k], n_bytes[k]) for k in range(D + 1)})
    return metrics


def rounded_copy(model: MTPModel, dtype: str) -> MTPModel:
    """The model as it will be stored in `dtype` and loaded back as float32 (for honest card numbers)."""
    copy = MTPModel(model.config)
    copy.load_state_dict({k: v.detach().cpu().to(DTYPES[dtype]).float() for k, v in model.state_dict().items()})
    return copy.eval()


# The gates' fixed settings: every card and every --verify uses these.
GREEDY_PROMPTS, GREEDY_NEW_TOKENS = 8, 128          # 8 prompts of 200 bytes, 128 greedy tokens each
PARSE_SAMPLES, PARSE_LINES, PARSE_TEMPERATURE = 20, 40, 0.8


def quality_report(model: MTPModel, tokenizer, chunks: torch.Tensor, greedy_prompts: list[str],
                   parse_prompts: list[str], val: dict | None = None) -> dict:
    """The quality gates of a code model, measured on held-out text (mtp_edu.quality).

    chunks: the validation chunks the card scores; gzip and xz compress exactly their text.
    Greedy: 128 new tokens after each prompt, and the distinct-4-gram ratio of the new tokens.
    Parse: each prompt continued at T = 0.8 (seed = its index) to the context end; prompt + the first
    40 complete lines must pass `ast.parse`. `card_prompts` gives the prompts every card uses.
    """
    if val is None:                              # `evaluate` of chunks with byte lengths, unless given
        val = evaluate(model, chunks, byte_lengths=token_byte_lengths(tokenizer))
    D, context = model.config.mtp_depth, model.config.max_seq_len
    # a prompt keeps at most half the context (only a small model's, e.g. the tiny preset's, is that short)
    fit = lambda prompt: tokenizer.encode(prompt)[-(context // 2):]   # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ContextLimitWarning)   # "to the context end" is the plan
        outs = [generate(model, fit(p), GREEDY_NEW_TOKENS) for p in greedy_prompts]
        parse_ids = [fit(p) for p in parse_prompts]
        samples = [tokenizer.decode(generate(model, ids, context, temperature=PARSE_TEMPERATURE, seed=i))
                   for i, ids in enumerate(parse_ids)]
    parsed = [quality.parses(tokenizer.decode(ids), s, PARSE_LINES) for ids, s in zip(parse_ids, samples)]
    distinct = [quality.distinct_ngram_ratio(o, 4) for o in outs]
    return {
        "bits_per_byte": [round(val[f"val_bpb_{k}"], 4) for k in range(D + 1)],
        "compressors_bits_per_byte": {name: round(b, 4) for name, b in
                                      quality.compressor_bits_per_byte(tokenizer.decode(chunks.flatten())).items()},
        "greedy": {"what": f"{GREEDY_NEW_TOKENS} greedy tokens after each prompt; distinct 4-grams of tokens / "
                           "all 4-grams", "prompts": greedy_prompts,
                   "distinct_4gram": [round(d, 4) for d in distinct],
                   "mean_distinct_4gram": round(statistics.mean(distinct), 4),
                   "first_output": tokenizer.decode(outs[0])},
        "parse": {"what": f"{len(parse_prompts)} continuations at T = {PARSE_TEMPERATURE} (seed i for prompt i) to "
                          f"the context end; prompt + first {PARSE_LINES} complete lines through ast.parse",
                  "prompts": parse_prompts, "parsed": sum(parsed), "of": len(parsed), "parsed_each": parsed,
                  "sample": quality.first_lines(samples[0], PARSE_LINES)},
    }


def card_prompts(val_text: str) -> tuple[list[str], list[str]]:
    """(greedy, parse) prompts: 200 bytes of code from each of the first 8 held-out files that have a
    top-level def or class, and the whole lines within the same 200 bytes of the first 20."""
    return (quality.code_prompts(val_text, GREEDY_PROMPTS),
            quality.code_prompts(val_text, PARSE_SAMPLES, whole_lines=True))


def load_summary(history: list[dict]) -> dict | None:
    """Mean and max of the 1-minute load average recorded during training (None if none was)."""
    loads = [h["load_avg"] for h in history if h.get("load_avg") is not None]
    return {"mean": round(statistics.mean(loads), 2), "max": round(max(loads), 2)} if loads else None


def make_card(model: MTPModel, corpus_info: dict, val_data: torch.Tensor, tc: TrainConfig, *, name: str,
              command: str, training_time_s: float, tokens_seen: int, hardware: str, weights_dtype: str,
              steps: int, commands: list[str] | None = None, history: list[dict] | None = None,
              tokenizer=None, val_text: str | None = None) -> dict:
    """The model card: how it was made and what it scores, measured on the weights as stored.

    With `tokenizer` and `val_text` (the validation split of a code corpus) it adds `quality_report`.
    """
    full = eval_chunks(val_data, tc.seq_len, tc.final_eval_chunks)
    card_slice = eval_chunks(val_data, tc.seq_len, tc.card_chunks)
    byte_lengths = token_byte_lengths(tokenizer) if tokenizer is not None else None
    val, sl = evaluate(model, full, byte_lengths=byte_lengths), evaluate(model, card_slice, byte_lengths=byte_lengths)
    D = model.config.mtp_depth

    def per_depth(metrics: dict, what: str) -> list[float]:
        return [round(metrics[f"val_{what}_{k}"], 6) for k in range(D + 1)]

    card = {
        "name": name,
        "command": command,
        "commands": commands or [command],
        "training_time_s": round(training_time_s, 1),
        "load_average": load_summary(history or []),
        "hardware": hardware,
        "software": f"python {platform.python_version()}, torch {torch.__version__}",
        "steps": steps,
        "tokens_seen": tokens_seen,
        "params": model.param_counts(),
        "config": model.config.to_dict(),
        "train_config": tc.to_dict(),
        "corpus": corpus_info,
        "weights_dtype": weights_dtype,
        "validation": {"what": f"{len(full)} chunks of {tc.seq_len + 1} tokens from the start of the "
                               "validation split (held-out files), depth k scored on its T-k positions",
                       "tokens_per_depth": [len(full) * (tc.seq_len - k) for k in range(D + 1)],
                       "loss": per_depth(val, "loss"), "acc": per_depth(val, "acc")},
        "eval_slice": {"what": "the first chunks of the validation split, stored here so that anyone can "
                               "recompute these numbers on any machine (mtp-edu info --verify)",
                       "loss": per_depth(sl, "loss"), "acc": per_depth(sl, "acc"),
                       "chunks": card_slice.tolist()},
    }
    if byte_lengths is not None:
        card["eval_slice"]["bits_per_byte"] = per_depth(sl, "bpb")
    if tokenizer is not None and val_text is not None:
        card["quality"] = quality_report(model, tokenizer, full, *card_prompts(val_text), val=val)
    return card


# ---- reading a card back: the summary and `mtp-edu info --verify` -------------------------------
CARD_FIELDS = ("name", "command", "steps", "tokens_seen", "training_time_s", "hardware", "software", "params",
               "config", "train_config", "corpus", "weights_dtype", "validation", "eval_slice")
MAIN_BPB_GATE, DISTINCT_GATE = 1.80, 0.5       # the quality gates of a shipped code model


def check_card(card, where: str) -> dict:
    """The card if it has every field the summary and --verify read; else a clear error naming the first
    missing one."""
    if not isinstance(card, dict):
        raise ValueError(f"{where}: the model card is not a JSON object")
    for field, inner in [*((f, None) for f in CARD_FIELDS), ("validation", "loss"), ("validation", "acc"),
                         ("eval_slice", "loss"), ("eval_slice", "acc"), ("eval_slice", "chunks"),
                         ("params", "total"), ("corpus", "name")]:
        value = card.get(field)
        if value is None or (inner is not None and (not isinstance(value, dict) or inner not in value)):
            raise ValueError(f"{where}: the model card has no {field + ('.' + inner if inner else '')!r}; "
                             "it is damaged or from another program (retrain or re-export to rebuild it)")
    return card


def _row(values) -> str:
    return " ".join(f"{x:7.4f}" for x in values)


def format_card(card: dict) -> str:
    """The card as the lines `mtp-edu info` prints."""
    val, sl = card["validation"], card["eval_slice"]
    load = card.get("load_average")
    lines = [f"model      {card['name']}",
             *(f"command    {c}" for c in card.get("commands", [card["command"]])),
             f"trained    {card['steps']} steps, {card['tokens_seen']:,} tokens, {card['training_time_s']:.0f} s "
             f"on {card['hardware']}" + (f" (load average {load['mean']} mean, {load['max']} max)" if load else ""),
             f"software   {card['software']}",
             f"params     {card['params']['total']:,} ({card['weights_dtype']} storage)",
             f"corpus     {card['corpus']['name']} sha256 {str(card['corpus'].get('sha256'))[:16]}...",
             f"validation {val.get('what', '')}",
             "  depth  " + " ".join(f"{k:>7d}" for k in range(len(val['loss']))),
             "  loss   " + _row(val["loss"]) + "   (nats/token)",
             "  top-1  " + _row(val["acc"])]
    q = card.get("quality")
    if q:
        compressors = ", ".join(f"{n} {b:.4f}" for n, b in q["compressors_bits_per_byte"].items())
        each = " ".join(f"{d:.2f}" for d in q["greedy"]["distinct_4gram"])
        lines += ["  bits/B " + _row(q["bits_per_byte"]) + f"   (bits per byte; {compressors} on the same bytes)",
                  f"greedy     distinct 4-grams {q['greedy']['mean_distinct_4gram']:.3f} (mean of "
                  f"{len(q['greedy']['prompts'])} prompts; {each})",
                  f"parse      {q['parse']['parsed']}/{q['parse']['of']} sampled continuations parse as Python"]
    lines += [f"eval slice ({len(sl['chunks'])} chunks, stored in the card; check with --verify)",
              "  loss   " + _row(sl["loss"]), "  top-1  " + _row(sl["acc"])]
    if "bits_per_byte" in sl:
        lines.append("  bits/B " + _row(sl["bits_per_byte"]))
    return "\n".join(lines)


def verify_card(model: MTPModel, tokenizer, card: dict, corpus=None) -> tuple[list, list]:
    """Recompute what the card claims from the stored weights: (checks, gates), each a list of
    (line, ok). A check compares a recomputed number with the card; a gate is a quality bar that the
    shipped models must clear (main head <= 1.80 bits per byte and below gzip and xz, greedy output
    with a distinct-4-gram ratio >= 0.5).

    The eval slice (stored chunks) is recomputed anywhere. The quality section needs the held-out
    text for its full-split bits per byte: `corpus` must be the card's (same sha256), else that line
    says so and the card's number is used for the gates.
    """
    sl, D = card["eval_slice"], model.config.mtp_depth
    chunks = torch.tensor(sl["chunks"], dtype=torch.long)
    has_bpb = "bits_per_byte" in sl
    got = evaluate(model, chunks, byte_lengths=token_byte_lengths(tokenizer) if has_bpb else None)
    keys = [("loss", "loss"), ("acc", "acc")] + ([("bits_per_byte", "bpb")] if has_bpb else [])
    diff = max(abs(got[f"val_{short}_{k}"] - sl[name][k]) for name, short in keys for k in range(D + 1))
    checks = [(f"eval slice: loss {_row(got[f'val_loss_{k}'] for k in range(D + 1))}, top-1 "
               f"{_row(got[f'val_acc_{k}'] for k in range(D + 1))}; max |difference| from the card {diff:.1e}",
               diff <= 1e-4)]
    q = card.get("quality")
    if not q:
        return checks, []
    if corpus is not None and corpus.sha256 == card["corpus"].get("sha256"):
        seq_len = card["train_config"]["seq_len"]
        full = eval_chunks(tokenizer.encode_tensor(corpus.val), seq_len, card["train_config"].get("final_eval_chunks"))
        fresh = quality_report(model, tokenizer, full, q["greedy"]["prompts"], q["parse"]["prompts"])
        bpb_diff = max(abs(a - b) for a, b in zip(fresh["bits_per_byte"], q["bits_per_byte"]))
        checks.append((f"bits per byte (held-out files): {_row(fresh['bits_per_byte'])}; max |difference| "
                       f"{bpb_diff:.1e}", bpb_diff <= 1e-3))
        checks.append((f"compressors on the same bytes: {fresh['compressors_bits_per_byte']}",
                       fresh["compressors_bits_per_byte"] == q["compressors_bits_per_byte"]))
    else:
        checks.append(("bits per byte (held-out files): not recomputed, this Python's standard library is not the "
                       "card's corpus (sha256 differs); the eval slice above is", True))
        fresh = quality_report(model, tokenizer, chunks, q["greedy"]["prompts"], q["parse"]["prompts"])
        fresh["bits_per_byte"], fresh["compressors_bits_per_byte"] = q["bits_per_byte"], q["compressors_bits_per_byte"]
    g, p = fresh["greedy"], fresh["parse"]
    card_distinct = q["greedy"]["mean_distinct_4gram"]
    checks += [(f"greedy distinct 4-grams: {g['mean_distinct_4gram']:.4f} (card {card_distinct:.4f})",
                g["distinct_4gram"] == q["greedy"]["distinct_4gram"]),
               (f"parsed continuations: {p['parsed']}/{p['of']} (card {q['parse']['parsed']}/{q['parse']['of']})",
                p["parsed_each"] == q["parse"]["parsed_each"])]
    main, comp = fresh["bits_per_byte"][0], fresh["compressors_bits_per_byte"]
    gates = [(f"main head {main:.4f} bits/byte <= {MAIN_BPB_GATE}", main <= MAIN_BPB_GATE),
             ("main head beats " + " and ".join(f"{n} ({b:.4f})" for n, b in comp.items()),
              all(main < b for b in comp.values())),
             (f"greedy distinct-4-gram ratio {g['mean_distinct_4gram']:.4f} >= {DISTINCT_GATE}",
              g["mean_distinct_4gram"] >= DISTINCT_GATE)]
    return checks, gates
