"""The decoding benchmark runs end to end, alternates its runs, and reports what it promises."""
import json
import statistics
import time

import pytest
import torch

from mtp_edu import load_pretrained
from mtp_edu.cli import UserError, main
from mtp_edu.data import ByteTokenizer
from mtp_edu.tools import bench

from conftest import tiny_model


def test_bench_model_reports_every_variant():
    model = tiny_model(max_seq_len=40).float()
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 1, 2, 3]]
    res = bench.bench_model(model, prompts, new_tokens=12, depths=[1, 2, 3], rounds=1, min_confidence=0.3)
    names = [v["name"] for v in res["variants"]]
    assert names == ["mtp d=1", "mtp d=2", "mtp d=3", "mtp d=3 q>=0.3", "prompt lookup d=3"]
    assert res["baseline_tokens_per_s"] > 0
    for v in res["variants"]:
        assert v["identical"] == "2/2"                       # greedy speculative == greedy generate
        assert v["tokens_per_s"] > 0 and v["speedup"] > 0
        assert 1 <= v["tau"] <= 4 and sum(v["accepted_histogram"]) > 0
    table = bench.format_table({"tiny": res})
    assert "prompt lookup d=3" in table and "identical" in table


def test_sampled_runs_and_the_speed_model():
    model = tiny_model(max_seq_len=40).float()
    res = bench.bench_model(model, [[1, 2, 3, 4, 5, 6]], new_tokens=12, depths=[2], rounds=2, min_confidence=0,
                            rule="sample", temperature=0.8)
    assert not {"trunk", "mtp_hidden", "head_logits"} & set(vars(model))              # the clock is removed
    mtp, lookup = res["variants"]
    assert res["rule"] == "sample" and mtp["identical"] == "n/a (sampled)"
    for v in (mtp, lookup):
        sm = v["speed_model"]
        assert sm["c_verify"] > 0 and len(sm["c_per_depth"]) == 3 and sm["c_drafts"] == sum(sm["c_per_depth"])
        assert sm["predicted_speedup"] == pytest.approx(statistics.median(sm["pair_predicted"]), abs=1e-3)
        assert len(sm["pair_predicted"]) == len(v["pair_speedups"]) == 2
    c_1, c_2, c_3 = mtp["speed_model"]["c_per_depth"]
    assert c_1 > 0 and c_2 > 0 and c_3 == 0                             # depth 2 drafts: modules 1 and 2 run
    assert lookup["speed_model"]["c_drafts"] == 0                       # prompt lookup runs no forward
    with pytest.raises(ValueError, match="greedy at temperature 0"):
        bench.bench_model(model, [[1, 2, 3]], 4, [1], 1, rule="sample", temperature=0)
    for bad in (1, 35):                                                  # no step to time; past the context
        with pytest.raises(ValueError, match="need at least 2"):
            bench.bench_model(model, [[1, 2, 3, 4, 5, 6]], bad, [1], 1)


def test_the_clock_leaves_the_prefill_out_and_times_each_depth():
    model = tiny_model(max_seq_len=40).float()
    prompt, trunk = [1, 2, 3, 4, 5, 6, 7, 8], model.trunk

    def slow_prefill(x, *args, **kwargs):              # the prefill is the only trunk forward over 8 tokens
        if x.shape[1] == len(prompt):
            time.sleep(0.2)
        return trunk(x, *args, **kwargs)
    model.trunk = slow_prefill
    with bench.ForwardClock(model) as clock:
        _, seconds = clock.run(bench.speculative_generate, model, prompt, 10, draft_depth=2)
        assert seconds > 0.2 > clock.verify_s > 0
        assert clock.draft_s[0] > 0 and clock.draft_s[1] > 0 and clock.draft_s[2] == 0    # modules 1, 2 drafted
        _, seconds = clock.run(bench.generate, model, prompt, 10)
        assert seconds > 0.2 > clock.verify_s > 0 and clock.draft_s == [0.0, 0.0, 0.0]   # a plain run's steps
    assert model.trunk is slow_prefill and not {"mtp_hidden", "head_logits"} & set(vars(model))   # restored


def test_tree_variants_are_greedy_exact_and_count_their_nodes():
    model = tiny_model(max_seq_len=40).float()
    trees = bench.parse_trees("2,1;dynamic:3")
    assert trees[0] == (2, 1) and trees[1].budget == 3
    res = bench.bench_model(model, [[1, 2, 3, 4, 5, 6]], new_tokens=10, depths=[2], rounds=1, trees=trees)
    chain, lookup, wide, dynamic = res["variants"]
    assert (wide["name"], dynamic["name"]) == ("tree 2,1", "tree dynamic:3")
    assert wide["identical"] == dynamic["identical"] == "1/1"
    assert chain["nodes_per_step"] <= 2 < wide["nodes_per_step"] <= 4 and dynamic["nodes_per_step"] <= 3
    assert wide["speed_model"]["c_drafts"] > 0                # the tree drafter's forwards are timed too
    for bad in ("3,x", "dynamic:", "dynamic:-"):
        with pytest.raises(ValueError, match="is not a tree"):
            bench.parse_trees(bad)


def test_main_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--models", "random:linear", "--depths", "1,2", "--prompts", "1", "--rounds", "1",
                       "--new-tokens", "6", "--prompt-tokens", "8", "--min-confidence", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "random:linear" in printed and "mtp d=2" in printed
    report = json.loads(out.read_text())
    assert report["command"].startswith("python -m mtp_edu.tools.bench --models random:linear")
    assert report["machine"]["threads"] == 1 and report["machine"]["load_average_1min"] >= 0
    variants = report["results"]["random:linear"]["variants"]
    assert [v["name"] for v in variants] == ["mtp d=1", "mtp d=2", "prompt lookup d=2"]
    assert all(v["identical"] == "1/1" for v in variants)
    assert report["results"]["random:linear"]["weights_sha256"] is None       # untrained: no stored weights


def test_a_stored_benchmark_names_the_weights_it_measured():
    from mtp_edu.checkpoint import sha256_file
    from mtp_edu.pretrained import pretrained_path
    assert bench.weights_sha256("mtp-seq-d3") == sha256_file(pretrained_path("mtp-seq-d3") / "model.safetensors")


def test_prompts_come_from_held_out_text():
    prompts = bench.make_prompts(ByteTokenizer(), count=3, length=20)
    assert len(prompts) == 3 and all(len(p) == 20 for p in prompts)
    assert len({tuple(p) for p in prompts}) == 3


@pytest.mark.parametrize("argv, message", [(["--depths", "0"], "--depths must be >= 1"),
                                           (["--depths", "a"], "comma-separated integers"),
                                           (["--rounds", "0"], "argument --rounds"),
                                           (["--temperature", "0.5"], "needs --rule sample"),
                                           (["--rule", "sample", "--temperature", "0"], "temperature >= 0.001")])
def test_bad_arguments(argv, message):
    with pytest.raises(UserError, match=message):
        bench.main(argv)


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["bench", "--models", "no-such-model", "--prompts", "1", "--rounds", "1"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_depths_beyond_the_model_s_d_are_an_error_naming_d(monkeypatch, capsys):
    monkeypatch.setattr(bench, "load_model", lambda spec: (tiny_model(mtp_depth=3, max_seq_len=40).float(),
                                                           ByteTokenizer()))
    assert main(["bench", "--models", "tiny", "--depths", "2,5", "--prompts", "1", "--rounds", "1",
                 "--new-tokens", "4", "--prompt-tokens", "8"]) == 2
    err = capsys.readouterr().err
    assert "tiny has D = 3 MTP modules, so its draft depths are 1..3" in err and "experimental_reuse_modules" in err
    with pytest.raises(ValueError, match=r"draft depths \[5\] are not in 1..D .* D = 3"):
        bench.bench_model(tiny_model(mtp_depth=3).float(), [[1, 2, 3]], 4, [1, 5], rounds=1)


def test_files_and_context_are_checked_before_anything_is_timed(tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("benchmarked before the arguments were checked")
    monkeypatch.setattr(bench, "bench_model", never)
    args = ["bench", "--models", "random:linear", "--prompts", "1", "--rounds", "1", "--new-tokens", "4"]
    assert main([*args, "--out", str(tmp_path / "missing" / "x.json")]) == 2
    assert "the folder" in capsys.readouterr().err
    assert main([*args, "--prompt-tokens", "300"]) == 2                    # random:* models have 256 positions
    assert "300 + --new-tokens 4 = 304 tokens do not fit random:linear's context of 256" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_compile_flag_compiles_the_model_before_any_timing(tmp_path, monkeypatch):
    compiled, timed = [], []

    def fake_compile(model):
        compiled.append(model)
        return model

    def checked_bench_model(model, *args, **kwargs):
        timed.append(any(m is model for m in compiled))               # compiled before it is timed?
        return real_bench_model(model, *args, **kwargs)

    real_bench_model = bench.bench_model
    monkeypatch.setattr(bench, "compile_for_decoding", fake_compile)
    monkeypatch.setattr(bench, "bench_model", checked_bench_model)
    out = tmp_path / "bench.json"
    assert bench.main(["--models", "random:sequential", "--depths", "1", "--prompts", "1", "--rounds", "1",
                       "--new-tokens", "4", "--prompt-tokens", "8", "--min-confidence", "0", "--compile",
                       "--out", str(out)]) == 0
    assert len(compiled) == 1 and timed == [True]
    report = json.loads(out.read_text())
    assert report["settings"]["compile"] is True
    assert "warmup_s" in report["results"]["random:sequential"]


def test_decode_breakdown_script_accounts_for_the_whole_run():
    import importlib.util
    from pathlib import Path

    from mtp_edu.drafting import MTPDrafter
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "decode_breakdown.py"
    spec = importlib.util.spec_from_file_location("decode_breakdown", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    draft = MTPDrafter.draft
    result = script.breakdown(compiled=False, rounds=1)
    assert MTPDrafter.draft is draft                                  # the timing wrapper is removed again
    shares = result["shares_of_fastest"]
    assert all(v > 0 for v in shares.values()) and abs(sum(shares.values()) - 1) < 1e-9


@pytest.mark.slow
def test_the_speed_model_predicts_the_measured_speedup_of_the_star_model():
    """S = tau / (c_v + c_1 + ... + c_D), from the forwards timed inside the runs, is within 20% of the
    speed-up measured by the clock on the wall.

    Within a pair, measured / predicted = (plain run's time / its forwards' time) / (the same for the
    speculative run), so what separates them is the work outside the timed forwards: the prefill (a short
    prompt, many new tokens) and the decoding logic. Load on a busy machine hits forwards and the rest
    alike, so it cancels within each pair; a run that is preempted unevenly is one pair of twelve, and the
    medians ride over it."""
    model, tokenizer = load_pretrained("mtp-seq-d3")
    prompt_tokens = 32
    new_tokens = min(128, model.config.max_seq_len - prompt_tokens)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = bench.bench_model(model, bench.make_prompts(tokenizer, 4, prompt_tokens), new_tokens, depths=[3],
                                rounds=3)
    finally:
        torch.set_num_threads(threads)
    mtp = res["variants"][0]
    measured, predicted = mtp["speedup"], mtp["speed_model"]["predicted_speedup"]
    assert mtp["name"] == "mtp d=3" and len(mtp["pair_speedups"]) == 12
    assert predicted == pytest.approx(measured, rel=0.2), (
        f"S predicted {predicted:.2f}x vs measured {measured:.2f}x; pairs measured {mtp['pair_speedups']}, "
        f"predicted {mtp['speed_model']['pair_predicted']}")
