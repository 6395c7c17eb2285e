"""``mmdpo eval`` through eval.command: predictions, a tiny model, defaults and user errors."""

from __future__ import annotations

import argparse
import json

import pytest

from eval.command import EXIT_USER_ERROR, add_arguments, default_out_dir, run
from eval.registry import get_benchmark


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mmdpo eval")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_predictions_are_scored_without_a_model(tmp_path, capsys):
    """Generated GSM8K items 0-2; two right answers and one wrong: strict 2/3."""
    items = get_benchmark("gsm8k").load(None, 3).items
    answers = [item["answer"].split("#### ")[-1] for item in items]
    rows = [
        {"id": items[0]["id"], "response": f"So #### {answers[0]}"},
        {"id": items[1]["id"], "response": f"#### {answers[1]}"},
        {"id": items[2]["id"], "response": "#### -1"},
    ]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    code = run(parse("gsm8k", "--predictions", str(predictions), "--limit", "3", "--out", str(out)))
    assert code == 0
    summary = json.loads((out / "gsm8k.json").read_text())
    assert summary["metrics"]["exact_match_strict"] == pytest.approx(2 / 3)
    assert summary["model"] == str(predictions) and summary["n"] == 3
    assert len((out / "gsm8k.samples.jsonl").read_text().splitlines()) == 3
    printed = capsys.readouterr().out
    assert "exact_match_strict" in printed and "0.6667" in printed


def test_missing_predictions_are_an_error_unless_allowed(tmp_path, capsys):
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps({"id": "0", "response": "#### 1"}) + "\n")
    args = ("gsm8k", "--predictions", str(predictions), "--limit", "3", "--out", str(tmp_path))
    assert run(parse(*args)) == EXIT_USER_ERROR
    assert "no prediction for 2 of 3" in capsys.readouterr().err
    assert run(parse(*args, "--allow-missing")) == 0
    assert json.loads((tmp_path / "gsm8k.json").read_text())["extra"]["missing"] == 2


def test_a_tiny_model_end_to_end(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "results"
    args = parse(
        "gsm8k,ifeval",
        "--model",
        str(tiny_llama_dir),
        "--limit",
        "2",
        "--max-new-tokens",
        "3",
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--no-progress",
    )
    assert run(args) == 0
    for name in ("gsm8k", "ifeval"):
        summary = json.loads((out / f"{name}.json").read_text())
        assert summary["n"] == 2 and summary["generation"]["batch_size"] == 2
    assert "inst_level_loose_acc" in capsys.readouterr().out


def test_user_errors_exit_with_status_2(tmp_path, capsys):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("")
    assert run(parse("nope", "--predictions", str(predictions))) == EXIT_USER_ERROR
    assert "valid names" in capsys.readouterr().err
    code = run(parse("gsm8k,pope", "--predictions", str(predictions), "--out", str(tmp_path)))
    assert code == EXIT_USER_ERROR
    assert "one benchmark at a time" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --model or --predictions is required
        parse("gsm8k")


def test_default_out_dir_is_beside_a_run(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("model:\n  name_or_path: x\n")
    assert default_out_dir(parse("gsm8k", "--model", str(run_dir))) == run_dir / "eval"
    assert default_out_dir(parse("gsm8k", "--model", "org/Some-Model")).name == "Some-Model"


def test_ifeval_predictions_on_a_hub_style_file(tmp_path):
    """Row 7 (no comma, quotation) passes both; row 9 (no comma) fails its one.

    prompt level 1/2, instruction level 2/3, strict and loose alike. The null kwargs of the
    hub's copy are dropped before the checkers see them.
    """
    rows = [
        {
            "key": 7,
            "prompt": "Quote a greeting without commas.",
            "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
            "kwargs": [{"num_words": None}, {"end_phrase": None}],
        },
        {"key": 9, "prompt": "List two letters.", "instruction_id_list": ["punctuation:no_comma"],
         "kwargs": [{}]},
    ]  # fmt: skip
    data = tmp_path / "input_data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        json.dumps({"key": 7, "response": '"hi there"'})
        + "\n"
        + json.dumps({"key": 9, "response": "a, b"})
        + "\n"
    )
    args = parse("ifeval", "--predictions", str(predictions), "--data", str(data))
    args.out = str(tmp_path / "out")
    assert run(args) == 0
    metrics = json.loads((tmp_path / "out" / "ifeval.json").read_text())["metrics"]
    assert metrics == pytest.approx(
        {
            "prompt_level_strict_acc": 0.5,
            "inst_level_strict_acc": 2 / 3,
            "prompt_level_loose_acc": 0.5,
            "inst_level_loose_acc": 2 / 3,
        }
    )
