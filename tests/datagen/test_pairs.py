"""``mmdpo pairs``: pairing on fixed responses worked by hand, the counts of the report, and
real sampling from the tiny Llama end to end."""

import argparse
import json
from pathlib import Path

import pytest

import mmdpo.inference
from data_adapters import load_samples
from datagen.pairs import add_pairs_arguments, best_vs_worst, run_pairs
from datagen.prompts import read_prompts

MATH_PROMPTS = [
    {"id": "p1", "problem": "What is 1 + 1?", "answer": "2"},
    {"id": "p2", "question": "What is 2 + 3?", "gold": "5", "level": 1},
]
# p1: two correct (one a whitespace variant of the other), one wrong, one empty.
# p2: all wrong -> no pair.
FIXED = {
    "What is 1 + 1?": ["So \\boxed{2}.", "So  \\boxed{2}.", "It is \\boxed{3}.", "   "],
    "What is 2 + 3?": ["4", "6", "7", "8"],
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def pairs_args(*words: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_pairs_arguments(parser)
    return parser.parse_args([*words, "--no-progress", "--verify-timeout", "0"])


@pytest.fixture
def fixed_generation(monkeypatch):
    """Replace sampling with FIXED responses (K samples of each prompt, prompt by prompt)."""
    calls = []

    def fake_generate(model, processing, prompts, **settings):
        prompts = [p for p in prompts for _ in range(settings["num_samples"])]
        calls.append((len(prompts), settings))
        answers, counters = [], {}
        for prompt in prompts:
            text = prompt.text
            answers.append(FIXED[text][counters.get(text, 0)])
            counters[text] = counters.get(text, 0) + 1
        return answers, {"n": len(prompts), "seconds": 0.0}

    monkeypatch.setattr(mmdpo.inference, "generate_texts", fake_generate)
    return calls


def test_math_pairs_from_fixed_responses(tmp_path, tiny_llama_dir, fixed_generation):
    """p1: distinct non-empty responses are "So \\boxed{2}." (correct, 10) and
    "It is \\boxed{3}." (wrong, 0): chosen the first, rejected the second, the duplicate and
    the empty response dropped. p2: nothing correct, no pair."""
    prompts = write_jsonl(tmp_path / "problems.jsonl", MATH_PROMPTS)
    out = tmp_path / "pairs.jsonl"
    args = pairs_args(str(prompts), str(out), "--model", str(tiny_llama_dir), "--k", "4")
    assert run_pairs(args) == 0
    (count, settings), *_ = fixed_generation
    assert count == 8 and settings["greedy"] is False and settings["temperature"] == 0.8

    (pair,) = load_samples(out, "trl").samples
    assert pair.id == "p1" and pair.prompt == [{"role": "user", "content": "What is 1 + 1?"}]
    assert (pair.chosen, pair.rejected) == ("So \\boxed{2}.", "It is \\boxed{3}.")
    assert (pair.score_chosen, pair.score_rejected) == (10.0, 0.0)
    row = json.loads(out.read_text())
    assert row["modality"] == "math" and row["meta"]["gold"] == "2"

    report = json.loads(Path(f"{out}.report.json").read_text())
    counts = report["counts"]
    assert counts["prompts"] == 2 and counts["responses"] == 8 and counts["pairs"] == 1
    assert counts["duplicates_dropped"] == 1 and counts["empty_dropped"] == 1
    assert counts["no_correct"] == 1 and counts["correct_responses"] == 2
    assert counts["no_pair"] == counts["no_correct"] + counts["no_chosen"] + counts["no_rejected"]
    assert counts["pairs"] == counts["rejected_correct"] + counts["rejected_incorrect"]
    assert report["k"] == 4 and report["task"] == "math"


def test_text_pairs_best_vs_worst_with_the_ifeval_scorer(tmp_path, tiny_llama_dir, monkeypatch):
    """Instruction: no commas. Scores 10, 0, 10, 0 -> best = first no-comma response, worst =
    first comma response. A prompt whose responses all pass ties and gets no pair."""
    rows = [
        {"id": "q1", "prompt": "Talk.", "instruction_id_list": ["punctuation:no_comma"]},
        {"id": "q2", "prompt": "Talk more.", "instruction_id_list": ["punctuation:no_comma"]},
    ]
    fixed = {"Talk.": ["fine", "a, b", "ok then", "c, d"], "Talk more.": ["x", "y", "z", "x"]}

    def fake_generate(model, processing, prompts, **settings):
        seen: dict[str, int] = {}
        out = []
        for prompt in [p for p in prompts for _ in range(settings["num_samples"])]:
            out.append(fixed[prompt.text][seen.get(prompt.text, 0)])
            seen[prompt.text] = seen.get(prompt.text, 0) + 1
        return out, {}

    monkeypatch.setattr(mmdpo.inference, "generate_texts", fake_generate)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "pairs.jsonl"
    args = pairs_args(
        str(prompts), str(out), "--model", str(tiny_llama_dir), "--k", "4", "--task", "text",
        "--scorer", "ifeval", "--save-responses",
    )  # fmt: skip
    assert run_pairs(args) == 0
    (pair,) = load_samples(out, "trl").samples
    assert (pair.id, pair.chosen, pair.rejected) == ("q1", "fine", "a, b")
    assert (pair.score_chosen, pair.score_rejected) == (10.0, 0.0)
    counts = json.loads(Path(f"{out}.report.json").read_text())["counts"]
    assert (counts["pairs"], counts["all_tied"], counts["duplicates_dropped"]) == (1, 1, 1)
    assert counts["no_pair"] == counts["too_few_distinct"] + counts["all_tied"]
    saved = [json.loads(line) for line in Path(f"{out}.responses.jsonl").read_text().splitlines()]
    assert saved[0]["scores"] == [10.0, 0.0, 10.0, 0.0]


def test_best_vs_worst_never_pairs_a_response_with_itself(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi"}, {"prompt": "Yo"}])
    items = read_prompts(path)
    responses = [["same", " same ", "same"], ["", "only"]]
    samples, report = best_vs_worst(
        items, responses, [[3.0, 1.0, 0.0], [5.0, 2.0]], modality="text", source="t"
    )
    assert samples == []
    assert (report.too_few_distinct, report.duplicates_dropped, report.empty_dropped) == (2, 2, 1)


def test_real_sampling_from_the_tiny_llama_end_to_end(tmp_path, tiny_llama_dir):
    prompts = write_jsonl(tmp_path / "problems.jsonl", MATH_PROMPTS)
    reports = []
    for name in ("one", "two"):
        out = tmp_path / f"{name}.jsonl"
        args = pairs_args(
            str(prompts), str(out), "--model", str(tiny_llama_dir), "--k", "4",
            "--max-new-tokens", "6", "--batch-size", "3", "--seed", "7", "--save-responses",
        )  # fmt: skip
        assert run_pairs(args) == 0
        responses = [
            json.loads(line)["responses"]
            for line in Path(f"{out}.responses.jsonl").read_text().splitlines()
        ]
        assert [len(texts) for texts in responses] == [4, 4]
        report = json.loads(Path(f"{out}.report.json").read_text())
        counts = report["counts"]
        assert (counts["prompts"], counts["responses"]) == (2, 8)
        assert counts["pairs"] + counts["no_pair"] == 2
        assert report["generation"]["n"] == 8
        for sample in load_samples(out, "trl").samples if out.stat().st_size else []:
            assert sample.chosen.strip() != sample.rejected.strip()
        reports.append(responses)
    assert reports[0] == reports[1]  # same seed, same responses


def test_user_mistakes(tmp_path, tiny_llama_dir):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "x", "prompt": "1+1?"}])
    model = ["--model", str(tiny_llama_dir)]
    out = str(tmp_path / "o.jsonl")
    with pytest.raises(ValueError, match=r"p.jsonl:1: answer/gold/gt: missing field"):
        run_pairs(pairs_args(str(prompts), out, *model))
    with pytest.raises(ValueError, match="is the input file"):
        run_pairs(pairs_args(str(prompts), str(prompts), *model, "--gold-field", "id"))
    with pytest.raises(ValueError, match="unknown task 'poetry'; valid tasks: math, text"):
        run_pairs(pairs_args(str(prompts), out, *model, "--task", "poetry"))
    with pytest.raises(ValueError, match="--task text needs --scorer"):
        run_pairs(pairs_args(str(prompts), out, *model, "--task", "text"))
    with pytest.raises(ValueError, match="column scorer copies existing ratings"):
        run_pairs(pairs_args(str(prompts), out, *model, "--scorer", "column"))
    with pytest.raises(ValueError, match="--k must be at least 2"):
        run_pairs(pairs_args(str(prompts), out, *model, "--k", "1"))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "y", "text": "no prompt"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1: prompt: missing field"):
        read_prompts(bad)


def test_math_grades_every_response_once(tmp_path, tiny_llama_dir, fixed_generation, monkeypatch):
    """8 responses (two prompts x K = 4): math-verify runs 8 times, copies and blanks included
    (they count in correct_responses); the pair builder reuses those grades."""
    import datagen.math_pairs

    checked = []
    grade = datagen.math_pairs.grade_math_response

    def counting(response, gold, **kwargs):
        checked.append(response)
        return grade(response, gold, **kwargs)

    monkeypatch.setattr(datagen.math_pairs, "grade_math_response", counting)
    prompts = write_jsonl(tmp_path / "problems.jsonl", MATH_PROMPTS)
    out = tmp_path / "pairs.jsonl"
    args = pairs_args(str(prompts), str(out), "--model", str(tiny_llama_dir), "--k", "4")
    assert run_pairs(args) == 0
    assert sorted(checked) == sorted(FIXED["What is 1 + 1?"] + FIXED["What is 2 + 3?"])
