"""Training cost of MTP, measured: step time vs the FLOP count, and peak memory of the two loss paths.

    python -m mtp_edu.tools.bench_train [--quick] [--out FILE]      (also: mtp-edu bench train)

Step times of D = 0..3 are taken alternately (0 1 2 3 0 1 2 3 ...) in one process, so that a
machine getting slower or faster affects every D alike; the median of each is compared with the ratio
that counting FLOPs predicts. Alternation evens out slow drifts, not a neighbour that comes and goes
within a round: the 1-minute load average is printed and stored, and a number taken while other jobs
ran (load well above the thread count) is not a measurement of the implementation.
Peak memory is taken in a fresh subprocess per case (CPU: the growth of peak RSS (VmHWM, reset
through /proc/self/clear_refs) over the RSS before the step; CUDA: torch.cuda.max_memory_allocated).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import torch

from ..cli import ArgumentParser, UserError, check_output_file, positive_int
from ..config import MTP_STYLES, MTPConfig
from ..losses import mtp_loss, mtp_loss_backward
from ..machine import hardware_description, load_average, pick_device
from ..model import MTPModel


def forward_flops_per_sequence(cfg: MTPConfig, T: int, attention: bool = True) -> float:
    """FLOPs of one forward over T tokens, 2 per multiply-add: every weight matmul, plus (if
    `attention`) the scores and the weighted sum over the causal prefix, (T+1)/2 keys on average."""
    d, ff, V = cfg.d_model, cfg.ff_width, cfg.vocab_size
    def block(n):                                          # one decoder block over n positions
        return n * (2 * (4 * d * d + 3 * d * ff) + (2 * 2 * d * (n + 1) / 2 if attention else 0))
    total = cfg.n_layers * block(T) + 2 * d * V * T        # trunk + main OutHead
    for k in range(1, cfg.mtp_depth + 1):
        n = T - k
        module = {"sequential": 2 * 2 * d * d * n + block(n), "parallel": block(n),
                  "linear": 2 * d * d * n}[cfg.mtp_style]
        total += module + 2 * d * V * n                    # module k + its pass through OutHead
    return total


def _step(model, opt, x, y, memory_efficient: bool) -> None:
    opt.zero_grad(set_to_none=True)
    if memory_efficient:
        mtp_loss_backward(model, x, y)
    else:
        mtp_loss(model(x), y).total.backward()
    opt.step()


def time_steps(base: MTPConfig, depths, batch: int, T: int, rounds: int, device: str = "cpu") -> dict:
    """Median step time (forward + backward + AdamW) per D, measured round-robin."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, base.vocab_size, (batch, T + 1), generator=g).to(device)
    setups = {}
    for D in depths:
        model = MTPModel(base.replace(mtp_depth=D)).to(device).train()
        setups[D] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
        _step(*setups[D], x[:, :-1], x[:, 1:], False)      # warm-up
    times = {D: [] for D in depths}
    for _ in range(rounds):
        for D in depths:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            _step(*setups[D], x[:, :-1], x[:, 1:], False)
            if device == "cuda":
                torch.cuda.synchronize()
            times[D].append(time.perf_counter() - t0)
    flops0 = forward_flops_per_sequence(base.replace(mtp_depth=0), T)
    rows = {}
    for D in depths:
        med = statistics.median(times[D])
        rows[D] = {"median_s": med, "tokens_per_s": batch * T / med,
                   "measured_ratio": med / statistics.median(times[depths[0]]),
                   "flop_ratio": forward_flops_per_sequence(base.replace(mtp_depth=D), T) / flops0}
    return rows


_PEAK_SNIPPET = """
import json, sys, torch
from mtp_edu.config import MTPConfig
from mtp_edu.model import MTPModel
from mtp_edu.tools.bench_train import _step
cfg, batch, T = MTPConfig.from_dict(json.loads(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
lean, device = sys.argv[4] == '1', sys.argv[5]
model = MTPModel(cfg).to(device)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randint(0, cfg.vocab_size, (batch, T + 1), generator=torch.Generator().manual_seed(0)).to(device)
_step(model, opt, x[:, :-1], x[:, 1:], lean)              # creates the optimizer state
if device == 'cuda':
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
    _step(model, opt, x[:, :-1], x[:, 1:], lean); torch.cuda.synchronize()
    print(torch.cuda.max_memory_allocated() - before)
else:
    rss = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) * 1024
    open('/proc/self/clear_refs', 'w').write('5')        # reset the peak RSS (VmHWM) to the current RSS
    before = rss('VmRSS')
    _step(model, opt, x[:, :-1], x[:, 1:], lean)
    print(rss('VmHWM') - before)
"""


def peak_step_memory(cfg: MTPConfig, batch: int, T: int, memory_efficient: bool, device: str = "cpu") -> int:
    """Bytes a training step adds on top of weights + optimizer state, measured in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _PEAK_SNIPPET, json.dumps(cfg.to_dict()), str(batch), str(T),
                          "1" if memory_efficient else "0", device], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def main(argv=None) -> int:
    """The benchmark as a command: prints the tables, writes the JSON report to --out, returns 0. Bad
    arguments are refused (UserError, exit status 2 from mtp-edu) before anything is measured."""
    ap = ArgumentParser(prog="mtp-edu bench train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, smaller memory case (for CI/notebooks)")
    ap.add_argument("--d-model", type=positive_int, default=128, help="a multiple of 8 (4 heads, even head size)")
    ap.add_argument("--n-layers", type=positive_int, default=6)
    ap.add_argument("--batch", type=positive_int, default=8)
    ap.add_argument("--seq", type=positive_int, default=256)
    ap.add_argument("--rounds", type=positive_int, default=None)
    ap.add_argument("--styles", default=",".join(MTP_STYLES), help=f"comma-separated, of {', '.join(MTP_STYLES)}")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", help="write the results as JSON here (checked before the benchmark runs)")
    args = ap.parse_args(argv)
    if args.device == "cpu" and not sys.platform.startswith("linux"):
        ap.error("CPU peak memory is read from /proc: Linux only; use --device cuda")
    try:
        pick_device(args.device)
    except ValueError as e:
        raise UserError(f"--device {args.device}: {e}") from None
    styles = args.styles.split(",")
    unknown = [s for s in styles if s not in MTP_STYLES]
    if unknown:
        ap.error(f"--styles: {', '.join(map(repr, unknown))} is not a style; choose from {', '.join(MTP_STYLES)}")
    try:
        base = MTPConfig(vocab_size=256, d_model=args.d_model, n_layers=args.n_layers, n_heads=4,
                         max_seq_len=args.seq + 1, mtp_loss_scale=0.3)
        base.replace(mtp_depth=3)
    except ValueError as e:
        raise UserError(f"--d-model {args.d_model}, --n-layers {args.n_layers}, --seq {args.seq}: {e}") from None
    if args.out:
        check_output_file(args.out)
    rounds = args.rounds or (3 if args.quick else 21)
    load = load_average()
    result = {"command": "python -m mtp_edu.tools.bench_train " + " ".join(sys.argv[1:] if argv is None else argv),
              "rounds": rounds, "device": args.device, "hardware": hardware_description(torch.device(args.device)),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "load_average_1min": load,
              "trunk": {"d_model": args.d_model, "n_layers": args.n_layers}, "batch": args.batch,
              "seq": args.seq, "step_time": {}, "peak_memory": {}}
    print(result["hardware"])
    print(f"training step: d={args.d_model}, L={args.n_layers}, batch {args.batch} x {args.seq} tokens, "
          f"V=256, {args.device}, {torch.get_num_threads()} threads, {rounds} alternating rounds"
          + ("" if load is None else f", load average {load:.2f} before the run"))
    print(f"{'style':<11}{'D':>2}{'median s':>10}{'tokens/s':>10}{'measured':>10}{'FLOPs':>8}{'excess':>8}")
    for style in styles:
        rows = time_steps(base.replace(mtp_style=style), [0, 1, 2, 3], args.batch, args.seq, rounds, args.device)
        result["step_time"][style] = rows
        for D, r in rows.items():
            print(f"{style:<11}{D:>2}{r['median_s']:>10.4f}{r['tokens_per_s']:>10.0f}{r['measured_ratio']:>10.3f}"
                  f"{r['flop_ratio']:>8.3f}{r['measured_ratio'] / r['flop_ratio'] - 1:>+8.1%}")
    mem_batch, mem_seq = (2, 128) if args.quick else (args.batch, args.seq)
    print(f"\npeak memory of one step beyond weights and optimizer state (sequential, batch {mem_batch} x {mem_seq})")
    print(f"{'vocab':>7}{'D=0':>10}{'D=3 plain':>12}{'D=3 lean':>12}{'lean / D=0':>12}")
    for V in (256, 32768):
        cfg = base.replace(vocab_size=V, max_seq_len=mem_seq + 1)
        mb = {name: peak_step_memory(cfg.replace(mtp_depth=D), mem_batch, mem_seq, lean, args.device) / 2**20
              for name, D, lean in (("d0", 0, False), ("d3_plain", 3, False), ("d3_lean", 3, True))}
        result["peak_memory"][V] = mb
        print(f"{V:>7}{mb['d0']:>9.1f}M{mb['d3_plain']:>11.1f}M{mb['d3_lean']:>11.1f}M"
              f"{mb['d3_lean'] / max(mb['d0'], 1e-9):>12.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":                     # through the CLI: its exit statuses and one-line errors
    from mtp_edu.cli import main as cli
    sys.exit(cli(["bench", "train", *sys.argv[1:]]))
