"""The `mtp-edu` command and its seven subcommands.

    mtp-edu train --preset tiny                       # 60-90 s on a laptop CPU, leaves runs/tiny
    mtp-edu train --preset mtp-seq-d3 --export DIR    # how the shipped models were made
    mtp-edu generate --model mtp-seq-d3 --prompt "def main("
    mtp-edu info mtp-seq-d3 [--verify]                # a model's card
    mtp-edu bench [train]                             # decoding speed; training cost (mtp_edu.tools)
    mtp-edu diagrams [--out DIR]                      # regenerate the diagrams/ folder
    mtp-edu notebooks [--write] [--repo DIR]          # run the walkthrough notebooks (repository only)
    mtp-edu assignments [--repo DIR]                  # regenerate the student versions (repository only)

`bench`, `notebooks` and `assignments` hand their arguments to a tool's own `main(argv)` in
mtp_edu.tools (see FORWARDED). To add another subcommand: write `add_NAME(sub)` that creates its
parser with `sub.add_parser(...)` and sets `func=` to a function taking the parsed args and returning
an exit code, then list it in SUBCOMMANDS.

Exit status, the same for every subcommand: 0 on success; 2 on an error the user can fix (a bad
argument, a missing or unwritable file, a broken checkpoint), with one line `mtp-edu: error: ...` on
stderr; 1 on a failure at run time (training that diverged, a bug), with one line `mtp-edu: failed:
...`. Never a traceback, unless MTP_EDU_TRACEBACK=1 asks for one.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path


class UserError(Exception):
    """An error caused by the arguments or files the user gave: shown as one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that a bad argument raises UserError, which main() shows as one line
    (argparse would print the whole usage first). The forwarded tools use it too."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def number_type(kind: type, minimum: float, inclusive: bool = True, maximum: float | None = None, note: str = ""):
    """An argparse type: an int, or a finite float, that is >= minimum (> minimum when not inclusive)
    and <= maximum."""
    what = "an integer" if kind is int else "a finite number"
    bounds = f"{'>=' if inclusive else '>'} {minimum}" + ("" if maximum is None else f" and <= {maximum}")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {bounds}, got {text!r}") from None
        if (kind is float and not math.isfinite(value)) or not (value >= minimum if inclusive else value > minimum) or \
                (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what} {bounds}{note}, got {text!r}")
        return value
    return parse


positive_int, _nonneg_int = number_type(int, 1, maximum=2**63 - 1), number_type(int, 0, maximum=2**63 - 1)   # int64
_positive_float, _nonneg_float = number_type(float, 0, inclusive=False), number_type(float, 0)
_seed = number_type(int, 0, maximum=2**64 - 1, note=" (torch seeds are 64-bit)")
MIN_TEMPERATURE = 1e-3


def _temperature(text: str) -> float:
    """An argparse type: 0 (greedy) or a finite temperature >= MIN_TEMPERATURE."""
    value = _nonneg_float(text)
    if 0 < value < MIN_TEMPERATURE:
        raise argparse.ArgumentTypeError(f"expected 0 (greedy) or a temperature >= {MIN_TEMPERATURE:g}, got {text!r}"
                                         ": below that, sampling is greedy decoding in all but name, and logits / T "
                                         "overflows float32 near 1e-38")
    return value


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """Check, before any work, that a result file can be written at `path` (UserError if not). A file
    created by the check is removed again."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory; give the name of a file to write")
    if not path.parent.is_dir():
        what = "is not a directory" if path.parent.exists() else "does not exist"
        raise UserError(f"{option} {path}: the folder {path.parent} {what}")
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        raise UserError(f"{option} {path}: cannot write there ({e.strerror or e})") from None
    if not existed:
        path.unlink()
    return path


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """Check, before any work, that files can be written into the folder `path`, made if missing (UserError if not)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: is a file; give a folder")
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{option} {path}: cannot make the folder, {folder} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mtp-edu-probe-", dir=folder))
    except OSError as e:
        raise UserError(f"{option} {path}: cannot write in {folder} ({e.strerror or e})") from None
    return path


def load_model(name_or_dir: str):
    """A shipped model by name (see `mtp_edu.list_pretrained()`) or a checkpoint directory."""
    from .checkpoint import load_checkpoint
    from .pretrained import list_pretrained, pretrained_path
    if name_or_dir in list_pretrained():
        return load_checkpoint(pretrained_path(name_or_dir))
    looks_like_path = any(sep in name_or_dir for sep in ("/", "\\", os.sep)) or name_or_dir.startswith(".")
    if not looks_like_path and not os.path.lexists(name_or_dir):     # lexists: a broken link is reported as one
        shipped = ", ".join(list_pretrained()) or "none installed"
        raise UserError(f"no model {name_or_dir!r}: not a shipped model ({shipped}) and not a checkpoint directory")
    return load_checkpoint(name_or_dir)


# ---- train ------------------------------------------------------------------------------------
def add_train(sub) -> None:
    from .presets import PRESETS
    p = sub.add_parser("train", help="train a model (presets: the shipped models, or `tiny`)",
                       description="Train an MTP model on the Python standard library (default), a "
                                   "synthetic language or a text file. Works under torchrun too.")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="starting configuration (default tiny)")
    p.add_argument("--out", help="checkpoint directory (default runs/PRESET)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose checkpoint is in --out, with its configs and tokenizer (--steps: "
                        "the new total); without it, an --out that holds a checkpoint is refused")
    p.add_argument("--export", metavar="DIR", help="also write an inference-only copy with its model card here")
    p.add_argument("--export-dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="storage dtype of the exported weights (loaded back as float32)")
    p.add_argument("--data", help="'stdlib', 'synthetic:cycle|words|noise[:NOISE]' or a UTF-8 text file")
    p.add_argument("--tokenizer", help="'byte' (default) or 'bpe:VOCAB_SIZE'")
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--batch-size", type=positive_int, help="global batch (all processes)")
    p.add_argument("--seq-len", type=positive_int)
    p.add_argument("--lr", type=_positive_float)
    p.add_argument("--seed", type=_seed)
    p.add_argument("--depth", type=_nonneg_int, help="MTP depth D (0 = next-token only)")
    p.add_argument("--style", choices=["sequential", "parallel", "linear"], help="MTP module style")
    p.add_argument("--mtp-lambda", type=_nonneg_float, help="lambda, the weight of the MTP losses (eq. 25)")
    p.add_argument("--eval-every", type=_nonneg_int)
    p.add_argument("--save-every", type=_nonneg_int)
    p.add_argument("--log-every", type=positive_int, help="history records the mean of this many steps")
    p.add_argument("--memory-efficient", action="store_true", help="one depth's logits alive at a time")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (not on Windows)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def run_train(args, argv: list[str]) -> int:
    from .config import TrainConfig
    from .presets import preset
    from .train import train
    model_config, tc = preset(args.preset)
    train_changes = {k: v for k, v in dict(
        data=args.data, tokenizer=args.tokenizer, steps=args.steps, batch_size=args.batch_size,
        seq_len=args.seq_len, lr=args.lr, seed=args.seed, eval_every=args.eval_every,
        save_every=args.save_every, log_every=args.log_every, device=args.device,
        threads=args.threads).items() if v is not None}
    if args.memory_efficient:
        train_changes["memory_efficient"] = True
    if args.compile:
        train_changes["compile"] = True
    model_changes = {k: v for k, v in dict(mtp_depth=args.depth, mtp_style=args.style,
                                           mtp_loss_scale=args.mtp_lambda).items() if v is not None}
    out = Path(args.out or f"runs/{args.preset}")
    name = args.preset
    if args.resume:
        from .checkpoint import CheckpointError, read_meta, run_record
        from .config import MTPConfig
        meta, record = read_meta(out), run_record(out)
        if record["train_config"] is None:
            raise UserError(f"cannot resume {out} from the command line: it records no training config "
                            "(train_config; saved through the Python API?); resume it with "
                            "mtp_edu.train.train(model_config, train_config, out, resume=True)")
        try:
            model_config = MTPConfig.from_dict(meta["config"])
            tc = TrainConfig.from_dict(record["train_config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"cannot resume {out}: the configs it records are invalid: {e}") from None
        name = meta.get("name") if isinstance(meta.get("name"), str) else name   # the run keeps its name
    tc = TrainConfig.from_dict({**tc.to_dict(), **train_changes})
    model_config = model_config.replace(**model_changes)
    seq_len_needed = tc.seq_len
    if seq_len_needed > model_config.max_seq_len:
        model_config = model_config.replace(max_seq_len=seq_len_needed)
    result = train(model_config, tc, out, resume=args.resume, export=args.export, export_dtype=args.export_dtype,
                   name=name, command="mtp-edu " + shlex.join(argv), progress=not args.no_progress)
    if os.environ.get("RANK", "0") != "0":                 # under torchrun only rank 0 reports
        return 0
    if result.card is not None:
        from .card import format_card
        print(format_card(result.card))
    print(f"checkpoint: {out}" + (f"; export: {args.export}" if args.export else ""))
    return 0


# ---- generate ---------------------------------------------------------------------------------
def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a model",
                       description="Generate text with a shipped model or a checkpoint directory.")
    p.add_argument("--model", default="mtp-seq-d3", help="shipped model name or checkpoint directory")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=positive_int, default=200)
    p.add_argument("--temperature", type=_temperature, default=0.0,
                   help=f"0 = greedy (default), else >= {MIN_TEMPERATURE:g}")
    p.add_argument("--top-k", type=_nonneg_int, default=0, help="0 = off")
    p.add_argument("--top-p", type=number_type(float, 0, inclusive=False, maximum=1), default=1.0, help="in (0, 1]")
    p.add_argument("--seed", type=_seed, default=0)
    p.set_defaults(func=run_generate)


def run_generate(args, argv: list[str]) -> int:
    if not args.prompt:
        raise UserError("--prompt must not be empty")
    try:
        from .decoding import generate
    except ImportError as e:
        raise UserError(f"generation is not available: mtp_edu.decoding cannot be imported ({e})") from None
    state = load_model(args.model)
    ids = state.tokenizer.encode(args.prompt)
    room = state.model.config.max_seq_len - len(ids)
    if room < 1:
        raise UserError(f"the prompt is {len(ids)} tokens; the model's context is {state.model.config.max_seq_len}")
    new = generate(state.model, ids, min(args.max_new_tokens, room), temperature=args.temperature,
                   top_k=args.top_k or None, top_p=args.top_p, seed=args.seed)
    print(args.prompt + state.tokenizer.decode(new))
    return 0


# ---- info -------------------------------------------------------------------------------------
def add_info(sub) -> None:
    p = sub.add_parser("info", help="show a model's card",
                       description="Print the model card of a shipped model or checkpoint directory.")
    p.add_argument("model", help="shipped model name or checkpoint directory")
    p.add_argument("--verify", action="store_true",
                   help="recompute the card's eval-slice numbers from the stored weights and compare; on the "
                        "card's corpus also its quality numbers; check the quality gates")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=run_info)


def run_info(args, argv: list[str]) -> int:
    from .card import check_card, format_card, verify_card
    state = load_model(args.model)
    card = state.card
    if card is None:
        meta = state.meta
        print(f"{state.path}: no model card; step {meta.get('step')}, config {json.dumps(meta.get('config'))}")
        return 0
    try:
        check_card(card, str(state.path))
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps({k: v for k, v in card.items() if k != "eval_slice"} |
                         {"eval_slice": {k: v for k, v in card["eval_slice"].items() if k != "chunks"}}, indent=1))
    else:
        print(format_card(card))
    if args.verify:
        corpus = None
        if card["corpus"]["name"] == "stdlib" and card.get("quality"):
            from .data import stdlib_corpus
            corpus = stdlib_corpus()
        checks, gates = verify_card(state.model, state.tokenizer, card, corpus)
        for line, ok in checks:
            print(("ok    " if ok else "FAIL  ") + line)
        for line, ok in gates:
            print(("pass  " if ok else "below ") + "gate: " + line)
        ok = all(ok for _, ok in checks)
        print("verified: the card matches the stored weights" if ok else "NOT verified: see the FAIL lines")
        if gates:
            print("quality gates of the shipped models: " + ("all pass" if all(g for _, g in gates) else
                                                              "not all pass (see 'below' lines)"))
        return 0 if ok else 1
    return 0


# ---- subcommands that hand all their arguments to a tool's own main() --------------------------
FORWARDED = {"bench": "bench", "bench train": "bench_train", "notebooks": "notebooks",
             "assignments": "assignments"}


@contextlib.contextmanager
def _one_line_usage_errors():
    """While a forwarded tool runs, its parser (prog "mtp-edu ...") reports a bad argument as ours does
    (UserError: one line, exit status 2), also when the tool builds a plain argparse.ArgumentParser.
    Other parsers (a library's) keep argparse's behaviour."""
    plain = argparse.ArgumentParser.error

    def error(parser, message):
        if str(parser.prog).startswith("mtp-edu"):
            ArgumentParser.error(parser, message)
        return plain(parser, message)
    argparse.ArgumentParser.error = error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = plain


def _forward(argv: list[str]) -> int | None:
    """Run `mtp_edu.tools.<module>.main(rest)` for a forwarded subcommand; None if argv is not one.
    A tool's main returns its exit status (None counts as 0)."""
    import importlib
    for words in sorted(FORWARDED, key=len, reverse=True):           # "bench train" before "bench"
        n = len(words.split())
        if argv[:n] == words.split():
            with _one_line_usage_errors():
                return importlib.import_module(f"mtp_edu.tools.{FORWARDED[words]}").main(argv[n:]) or 0
    return None


def add_bench(sub) -> None:
    sub.add_parser("bench", help="decoding speed: mtp-edu bench [--help]; training cost and memory: "
                   "mtp-edu bench train [--help]")


def add_notebooks(sub) -> None:
    sub.add_parser("notebooks", help="run the walkthrough notebooks headlessly (--write rewrites their outputs; "
                   "needs a repository checkout)")


def add_diagrams(sub) -> None:
    p = sub.add_parser("diagrams", help="regenerate the diagrams/ folder (SVG + .dot) from the code")
    p.add_argument("--out", default="diagrams", help="output folder (default diagrams)")

    def run(args, argv):
        from .viz.diagrams import GraphvizNotFound, write_diagrams
        check_output_folder(args.out)
        try:
            paths = write_diagrams(args.out)
        except GraphvizNotFound as e:
            raise UserError(str(e)) from None
        print(f"wrote {len(paths)} files to {args.out}/")
        return 0
    p.set_defaults(func=run)


def add_assignments(sub) -> None:
    sub.add_parser("assignments", help="regenerate the student versions of the assignments (needs a repository "
                   "checkout)")


# ---- entry point ------------------------------------------------------------------------------
SUBCOMMANDS = [add_train, add_generate, add_info, add_bench, add_diagrams, add_notebooks, add_assignments]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="mtp-edu", description="Multi-Token Prediction, small enough to read.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)   # subparsers: ArgumentParser
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# Errors about what the user gave (exit status 2); anything else that escapes is a failure at run time (1).
INPUT_ERRORS = (UserError, ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError,
                NotADirectoryError, PermissionError)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).splitlines()) or type(error).__name__     # one line, whatever the message


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        forwarded = _forward(argv)
        if forwarded is not None:
            return forwarded
        args = build_parser().parse_args(argv)   # a bad argument raises UserError (see ArgumentParser)
        return args.func(args, argv)
    except INPUT_ERRORS as e:                    # CheckpointError is a ValueError
        if os.environ.get("MTP_EDU_TRACEBACK"):
            import traceback
            traceback.print_exc()
        print(f"mtp-edu: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtp-edu: interrupted", file=sys.stderr)
        return 130
    except Exception as e:                       # e.g. mtp_edu.train.TrainingDiverged
        if os.environ.get("MTP_EDU_TRACEBACK"):
            import traceback
            traceback.print_exc()
        ours = type(e).__module__.startswith("mtp_edu")     # a failure we report on purpose, not a bug
        print(f"mtp-edu: failed: {'' if ours else type(e).__name__ + ': '}{_one_line(e)}"
              + ("" if ours else " (MTP_EDU_TRACEBACK=1 shows where)"), file=sys.stderr)
        return 1


if __name__ == "__main__":          # python -m mtp_edu.cli: run the imported module, whose UserError the tools raise
    from mtp_edu.cli import main as _main
    sys.exit(_main())
