"""The shipped models (mtp_edu.pretrained): present, small, fast to load, their cards true, and the star
clears the quality gates."""
import time
from pathlib import Path

import pytest
import torch

import mtp_edu.pretrained as pretrained
from mtp_edu.card import DISTINCT_GATE, MAIN_BPB_GATE, evaluate
from mtp_edu.cli import main
from mtp_edu.data import BPETokenizer, eval_chunks, stdlib_corpus, token_byte_lengths
from mtp_edu.pretrained import list_pretrained, load_pretrained, pretrained_card

NAMES = ["mtp-seq-d3", "mtp-d0", "mtp-par-d3", "mtp-lin-d3"]
STYLE = {"mtp-seq-d3": "sequential", "mtp-par-d3": "parallel", "mtp-lin-d3": "linear"}
TRUNK_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len", "tie_embeddings", "d_ff",
                "rope_theta", "norm_eps", "init_seed")


def test_all_four_models_ship_within_30_mb():
    assert list_pretrained() == NAMES
    size = sum(p.stat().st_size for p in Path(pretrained.__file__).parent.rglob("*") if p.is_file())
    assert size <= 30 * 2**20, f"{size / 2**20:.1f} MiB"


@pytest.mark.parametrize("name", NAMES)
def test_loads_in_under_two_seconds(name):
    start = time.perf_counter()
    model, tokenizer = load_pretrained(name)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{name} took {elapsed:.2f} s"
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == model.config.vocab_size == 2048
    text = "def main(argv):\n    return sorted(argv, key=len)  # é ✓\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text          # byte-level BPE: every string round-trips
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_card_numbers_are_reproduced_from_the_stored_weights(name):
    model, tokenizer = load_pretrained(name)
    card = pretrained_card(name)
    chunks = torch.tensor(card["eval_slice"]["chunks"])
    got = evaluate(model, chunks, byte_lengths=token_byte_lengths(tokenizer))
    D = model.config.mtp_depth
    n_positions = [chunks.shape[0] * (chunks.shape[1] - 1 - k) for k in range(D + 1)]
    for k in range(D + 1):
        assert got[f"val_loss_{k}"] == pytest.approx(card["eval_slice"]["loss"][k], abs=1e-4)
        assert got[f"val_bpb_{k}"] == pytest.approx(card["eval_slice"]["bits_per_byte"][k], abs=1e-4)
        # accuracy counts argmax hits: allow one position to flip on another CPU's rounding
        assert abs(got[f"val_acc_{k}"] - card["eval_slice"]["acc"][k]) <= 1.5 / n_positions[k]


def test_cards_describe_comparable_models():
    cards = {name: pretrained_card(name) for name in NAMES}
    base = cards["mtp-seq-d3"]
    for name, card in cards.items():
        cfg = card["config"]
        for command in card["commands"]:                 # every command of the run, resumed or not
            assert command.startswith(f"mtp-edu train --preset {name} "), command
            assert f"--export mtp_edu/pretrained/{name}" in command, command
        assert card["corpus"]["name"] == "stdlib" and card["weights_dtype"] == "float16"
        assert card["train_config"]["tokenizer"] == base["train_config"]["tokenizer"] == "bpe:2048"
        assert all(cfg[f] == base["config"][f] for f in TRUNK_FIELDS), name          # one trunk for all
        assert card["steps"] == base["steps"] and card["tokens_seen"] == base["tokens_seen"]
        assert card["training_time_s"] > 0 and ("CPU" in card["hardware"] or "CUDA" in card["hardware"])
        assert card["load_average"] is not None                                   # what it shared the machine with
        assert cfg["mtp_depth"] == (0 if name == "mtp-d0" else 3)
        if name in STYLE:
            assert cfg["mtp_style"] == STYLE[name]
        assert cfg["n_layers"] >= 6                      # the trunk is much deeper than one MTP block
        D = cfg["mtp_depth"]
        assert len(card["validation"]["loss"]) == len(card["validation"]["acc"]) == D + 1   # every depth
        assert len(card["quality"]["bits_per_byte"]) == D + 1


def test_the_star_beats_gzip_and_xz_in_bits_per_byte():
    q = pretrained_card("mtp-seq-d3")["quality"]
    main_bpb, compressors = q["bits_per_byte"][0], q["compressors_bits_per_byte"]
    assert main_bpb <= MAIN_BPB_GATE and all(main_bpb < b for b in compressors.values()), (main_bpb, compressors)
    assert set(compressors) == {"gzip -9", "xz -9e"}
    assert len(q["greedy"]["prompts"]) == 8 and q["parse"]["of"] == 20


@pytest.mark.xfail(strict=True, reason="open: the star's greedy output loops (distinct 4-grams 0.243 at 128 tokens); "
                   "`mtp-edu info mtp-seq-d3 --verify` prints it as below the gate")
def test_the_star_clears_the_greedy_distinct_4gram_gate():
    assert pretrained_card("mtp-seq-d3")["quality"]["greedy"]["mean_distinct_4gram"] >= DISTINCT_GATE


def test_info_verify_reproduces_the_star_card():
    assert main(["info", "mtp-seq-d3", "--verify"]) == 0


@pytest.mark.slow
def test_star_full_validation_numbers_on_this_machine():
    """The card's full validation numbers, recomputed when this machine's corpus is the card's."""
    card = pretrained_card("mtp-seq-d3")
    corpus = stdlib_corpus()
    if corpus.sha256 != card["corpus"]["sha256"]:
        pytest.skip("this Python's standard library differs from the card's (corpus sha256); "
                    "the eval-slice test covers the card numbers")
    model, tok = load_pretrained("mtp-seq-d3")
    chunks = eval_chunks(tok.encode_tensor(corpus.val), card["train_config"]["seq_len"],
                         card["train_config"]["final_eval_chunks"])
    got = evaluate(model, chunks)
    assert [round(got[f"val_loss_{k}"], 4) for k in range(4)] == pytest.approx(card["validation"]["loss"], abs=2e-4)


def test_readme_is_written_from_the_cards():
    from mtp_edu.tools.model_readme import render
    committed = (Path(pretrained.__file__).parent / "README.md").read_text()
    assert committed == render(), "mtp_edu/pretrained/README.md is stale: python -m mtp_edu.tools.model_readme --write"


def test_project_readme_table_is_the_cards():
    from mtp_edu.tools.model_readme import summary
    readme = (Path(pretrained.__file__).parents[2] / "README.md").read_text()
    assert summary() in readme, "README.md's models table is stale: python -m mtp_edu.tools.model_readme --summary"
