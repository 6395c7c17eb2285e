"""The application entry point: config data loaded, trained, the task's suite before/after."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mmdpo.cli import main
from mmdpo.config import load_config
from tasks import get_task
from tasks.run import EvalPlan, before_after_table, train_run
from tests.fixtures import write_pairs


@pytest.mark.slow  # two model loads and generation on top of a short run (~30 s on 2 cores)
def test_the_task_suite_runs_before_and_after_training(tiny_llama_dir, tmp_path):
    task = get_task("text")
    config = task.load_config(
        None,
        [
            f"model.name_or_path={tiny_llama_dir}",
            f"data.train={write_pairs(tmp_path / 'pairs.jsonl')}",
            "data.format=trl",
            f"train.output_dir={tmp_path / 'run'}",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.grad_accum=1",
            "model.dtype=float32",
            "train.mixed_precision='no'",
            "model.gradient_checkpointing=false",
            "train.progress=false",
        ],
    )
    plan = EvalPlan(tuple(task.eval_suite), limit=2, max_new_tokens=8)
    done = train_run(config, evaluate=plan)
    assert done.result.steps == 2
    # preference compares the adapter on and off: after training only.
    assert [r.benchmark for r in done.before] == ["ifeval"]
    assert [r.benchmark for r in done.after] == ["preference", "ifeval"]
    assert done.after[0].adapter == str(done.result.final_checkpoint)
    assert (tmp_path / "run" / "eval" / "before" / "ifeval.json").is_file()
    assert (tmp_path / "run" / "eval" / "after" / "preference.json").is_file()
    table = before_after_table(done.before, done.after)
    assert "ifeval      prompt_level_strict_acc" in table and "GENERATED" in table


def test_before_after_table_shows_the_change():
    before = [SimpleNamespace(benchmark="gsm8k", metrics={"accuracy": 0.25}, generated=False)]
    after = [
        SimpleNamespace(benchmark="preference", metrics={"accuracy": 0.75}, generated=False),
        SimpleNamespace(benchmark="gsm8k", metrics={"accuracy": 0.5}, generated=False),
    ]
    assert before_after_table(before, after).splitlines() == [
        "benchmark   metric    before  after   change",
        "----------  --------  ------  ------  ------",
        "preference  accuracy  -       0.7500",
        "gsm8k       accuracy  0.2500  0.5000  0.2500",
    ]


def test_eval_needs_a_task_and_known_benchmarks(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    args = [f"model.name_or_path={tmp_path}", f"data.train={pairs}", "data.format=trl"]
    assert main(["train", "--eval", *args]) == 2
    assert "--eval runs a task's eval suite: name the task" in capsys.readouterr().err
    assert main(["train", "text", "--eval-limit", "3", *args]) == 2
    assert "--eval-limit and --eval-data need --eval" in capsys.readouterr().err
    config = load_config(None, [*args, f"train.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match="unknown benchmark"):
        train_run(config, evaluate=EvalPlan(("nope",)))
    assert not (tmp_path / "run").exists()
