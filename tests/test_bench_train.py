"""The FLOP model behind `mtp-edu bench train`, checked against torch's own FLOP counter."""
import json
import os
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
    main(["--quick", "--d-model", "32", "--n-layers", "1", "--batch", "2", "--seq", "16", "--styles", "linear",
          "--rounds", "1", "--out", str(out)])
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
