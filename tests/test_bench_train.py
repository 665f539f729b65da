"""The FLOP model behind `mtp-edu bench train`, checked against torch's own FLOP counter."""
import json
import os
import re
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mtp_edu import MTPConfig, MTPModel
from mtp_edu.config import MTP_STYLES
from mtp_edu.tools.bench_train import forward_flops_per_sequence, main, peak_step_memory


@pytest.mark.parametrize("style", MTP_STYLES)
@pytest.mark.parametrize("D", [0, 1, 3])
def test_weight_matmul_flops_match_torch_counter(style, D):
    cfg = MTPConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, mtp_depth=D, mtp_style=style, max_seq_len=40)
    with FlopCounterMode(display=False) as counter:
        MTPModel(cfg)(torch.zeros(2, 40, dtype=torch.long))
    # torch counts the weight matmuls (aten.mm) here; attention runs inside SDPA
    assert counter.get_total_flops() == 2 * forward_flops_per_sequence(cfg, 40, attention=False)
    assert forward_flops_per_sequence(cfg, 40) > forward_flops_per_sequence(cfg, 40, attention=False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS is read from /proc (Linux)")
def test_memory_efficient_loss_keeps_one_logits_tensor_alive():
    cfg = MTPConfig(vocab_size=8192, d_model=32, n_layers=1, n_heads=4, mtp_depth=3, max_seq_len=129)
    logits_bytes = 4 * 128 * 8192 * 4                  # one (B=4, T=128, V) float32 tensor: 16 MiB
    plain = peak_step_memory(cfg, 4, 128, memory_efficient=False)
    lean = peak_step_memory(cfg, 4, 128, memory_efficient=True)
    assert plain - lean > 2 * logits_bytes             # plain keeps all four depths' logits (and grads)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS is read from /proc (Linux)")
def test_main_reports_ratios_memory_and_the_machine(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["--quick", "--d-model", "32", "--n-layers", "1", "--batch", "2", "--seq", "16", "--styles", "linear",
                 "--rounds", "1", "--device", "cpu", "--out", str(out)]) == 0          # an exit status, not the dict
    printed = capsys.readouterr().out
    assert "excess" in printed and "lean / D=0" in printed and "load average" in printed
    report = json.loads(out.read_text())
    rows = report["step_time"]["linear"]
    assert list(rows) == ["0", "1", "2", "3"] and rows["0"]["flop_ratio"] == rows["0"]["measured_ratio"] == 1
    assert rows["1"]["flop_ratio"] < rows["2"]["flop_ratio"] < rows["3"]["flop_ratio"]
    assert all(r["tokens_per_s"] > 0 for r in rows.values())
    assert set(report["peak_memory"]) == {"256", "32768"} and f"{os.cpu_count()} CPU cores" in report["hardware"]
    assert report["rounds"] == 1 and report["command"].endswith(f"--out {out}")
    assert report["load_average_1min"] >= 0


@pytest.mark.parametrize("argv, message", [
    (["--d-model", "7"], "--d-model 7, --n-layers 6, --seq 256: MTPConfig.d_model=7 is not allowed"),
    (["--seq", "2"], "--seq 2: MTPConfig.max_seq_len"),
    (["--styles", "linear,bogus"], "--styles: 'bogus' is not a style; choose from sequential, parallel, linear"),
    (["--batch", "0"], "argument --batch: expected an integer >= 1"),
    (["--out", "MISSING/x.json"], "the folder"),
])
def test_bad_arguments_are_refused_before_anything_is_measured(argv, message, tmp_path, monkeypatch):
    from mtp_edu.cli import UserError
    from mtp_edu.tools import bench_train

    def never(*args, **kwargs):
        raise AssertionError("measured before the arguments were checked")
    monkeypatch.setattr(bench_train, "time_steps", never)
    monkeypatch.setattr(bench_train, "peak_step_memory", never)
    with pytest.raises(UserError, match=re.escape(message)):
        main([a.replace("MISSING", str(tmp_path / "missing")) for a in argv] + ["--device", "cpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_refused():
    from mtp_edu.cli import UserError
    with pytest.raises(UserError, match="--device cuda: device='cuda' is not available"):
        main(["--device", "cuda"])
