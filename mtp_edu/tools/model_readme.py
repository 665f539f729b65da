"""Write mtp_edu/pretrained/README.md from the shipped models' cards, so that every number in it is a
card's number; `summary()` is the short table of the project README (a test checks that it is there).

    python -m mtp_edu.tools.model_readme            # print it
    python -m mtp_edu.tools.model_readme --write    # write mtp_edu/pretrained/README.md
    python -m mtp_edu.tools.model_readme --summary  # print the project README's table
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..pretrained import DESCRIPTIONS, HERE, list_pretrained, pretrained_card

INTRO = """# Shipped models

Four small models trained on the Python standard library (the default corpus of
`mtp_edu.data.stdlib_corpus`), loaded with `mtp_edu.pretrained.load_pretrained(name)`. Each folder is an
mtp-edu checkpoint: `model.safetensors` (float16 storage, loaded back as float32), `checkpoint.json` (config,
tokenizer, corpus hash, commands, training history) and `card.json` (the model card). `mtp-edu info NAME`
prints a card; `mtp-edu info NAME --verify` recomputes its numbers from the stored weights and checks the
quality gates. This file is written from the cards by `python -m mtp_edu.tools.model_readme --write`.
"""


def _join(values, fmt: str) -> str:
    return " / ".join(fmt.format(v) for v in values)


def _size(name: str) -> int:
    return sum(p.stat().st_size for p in (HERE / name).iterdir() if p.is_file())


def render() -> str:
    """The README of the shipped models, from their cards."""
    names = list_pretrained()
    cards = {n: pretrained_card(n) for n in names}
    star = cards[names[0]]
    cfg, tc = star["config"], star["train_config"]
    trunk = (f"All share one trunk: {cfg['n_layers']} pre-norm blocks, d_model {cfg['d_model']}, {cfg['n_heads']} "
             f"heads, context {cfg['max_seq_len']} tokens, vocabulary {cfg['vocab_size']} (tokenizer "
             f"`{tc['tokenizer']}`), {'tied' if cfg['tie_embeddings'] else 'untied'} embeddings, init_seed "
             f"{cfg['init_seed']}, and the same data order (seed {tc['seed']}): {tc['steps']} steps of "
             f"{tc['batch_size']} chunks of {tc['seq_len']} tokens. A parallel MTP module is one block, a "
             f"sequential one a 2d -> d projection and one block (against the trunk's {cfg['n_layers']}), a linear "
             f"head one d x d layer; every draft also "
             f"pays a pass through the shared d x V output head. lambda = {cfg['mtp_loss_scale']} (eq. 25).")
    lines = [INTRO, trunk, "",
             "| model | what | params | size on disk | tokens seen | training time (load average mean / max) "
             "| val loss per depth (nats/token) | bits per byte per depth | val top-1 per depth |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, c in cards.items():
        load = c.get("load_average")
        bpb = c.get("quality", {}).get("bits_per_byte")
        lines.append(f"| `{n}` | {DESCRIPTIONS[n]} | {c['params']['total']:,} | {_size(n) / 2**20:.2f} MiB | "
                     f"{c['tokens_seen']:,} | {c['training_time_s'] / 3600:.2f} h"
                     + (f" ({load['mean']} / {load['max']})" if load else "") + " | "
                     f"{_join(c['validation']['loss'], '{:.3f}')} | {_join(bpb, '{:.3f}') if bpb else '-'} | "
                     f"{_join(c['validation']['acc'], '{:.3f}')} |")
    lines += ["", "Commands (a run continued with `--resume` lists each):", ""]
    for n, c in cards.items():
        lines += [f"- `{n}`: " + "; then ".join(f"`{cmd}`" for cmd in c.get("commands", [c["command"]]))]
    lines += ["", f"Hardware: {star['hardware']}; {star['software']}. Validation: {star['validation']['what']}.",
              f"Corpus: {star['corpus']['name']} (Python {star['corpus'].get('python', '?')}), sha256 "
              f"{star['corpus'].get('sha256')}.", "",
              "Training time is wall-clock on a shared machine: the load average beside it is the mean and the "
              "maximum of the 1-minute load average recorded during the run, so the time means something. "
              "Bits per byte: the summed loss over the held-out text, in bits, divided by its UTF-8 byte count; it "
              "compares byte and subword models, and compressors."]
    gated = {n: c["quality"] for n, c in cards.items() if "quality" in c}
    if gated:
        lines += ["", "## Quality (the held-out files; `mtp-edu info NAME --verify` recomputes it)", "",
                  "| model | main head, bits per byte | gzip -9 | xz -9e | greedy distinct 4-grams (mean of 8 prompts) "
                  "| sampled continuations that parse |", "|---|---|---|---|---|---|"]
        for n, q in gated.items():
            comp = q["compressors_bits_per_byte"]
            lines.append(f"| `{n}` | {q['bits_per_byte'][0]:.3f} | {comp['gzip -9']:.3f} | {comp['xz -9e']:.3f} | "
                         f"{q['greedy']['mean_distinct_4gram']:.3f} | {q['parse']['parsed']} of {q['parse']['of']} |")
    return "\n".join(lines) + "\n"


def summary() -> str:
    """The project README's table of the shipped models: held-out scores per depth and the quality gates'
    measures, from the cards, and the compressors on the same bytes."""
    lines = ["| model | style, D | parameters | bits per byte: main (MTP depth 1 / 2 / 3) "
             "| top-1: main (depth 1 / 2 / 3) | greedy distinct 4-grams | sampled continuations that parse |",
             "|---|---|---|---|---|---|---|"]
    cards = {n: pretrained_card(n) for n in list_pretrained()}

    def deeper(values):                          # the MTP depths, after the main head's number
        return f" ({_join(values, '{:.3f}')})" if values else ""

    for n, c in cards.items():
        cfg, q, acc = c["config"], c["quality"], c["validation"]["acc"]
        bpb = q["bits_per_byte"]
        style = "none" if cfg["mtp_depth"] == 0 else cfg["mtp_style"]
        lines.append(f"| `{n}` | {style}, {cfg['mtp_depth']} | {c['params']['total']:,} | "
                     f"{bpb[0]:.3f}{deeper(bpb[1:])} | {acc[0]:.3f}{deeper(acc[1:])} | "
                     f"{q['greedy']['mean_distinct_4gram']:.3f} | {q['parse']['parsed']} of {q['parse']['of']} |")
    comp = next(iter(cards.values()))["quality"]["compressors_bits_per_byte"]
    lines += ["", "On the same held-out bytes: " + ", ".join(f"`{n}` {b:.3f}" for n, b in comp.items())
              + " bits per byte."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mtp_edu.tools.model_readme", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write mtp_edu/pretrained/README.md")
    ap.add_argument("--summary", action="store_true", help="print the project README's table instead")
    args = ap.parse_args(argv)
    text = summary() if args.summary else render()
    if args.write and not args.summary:
        Path(HERE / "README.md").write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
