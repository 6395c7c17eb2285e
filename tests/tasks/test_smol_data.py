"""The `smol` preset's generated prompts: seeded, correct, split without overlap, and read by
the scorers and benchmarks that check them."""

import json
import re

import pytest

from datagen.prompts import read_prompts
from datagen.scorers import IFEvalScorer, MathScorer, Response
from eval.ifeval.benchmark import IFEval
from eval.ifeval.registry import CHECKERS
from tasks.smol_data import INSTRUCTIONS, instruction_prompts, split_of, word_problems
from tasks.smol_preset import SmolArithmetic

# kind -> the answer from the numbers in the question, in the order they appear.
FORMULAS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "add_subtract": lambda a, b, c: a + b - c,
    "multiply_add": lambda a, b, c: a * b + c,
    "multiply_subtract": lambda a, b, c: a * b - c,
    "add_add": lambda a, b, c: a + b + c,
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_word_problems_are_deterministic_and_seeds_differ():
    assert word_problems(30, seed=3) == word_problems(30, seed=3)
    assert word_problems(30, seed=3) != word_problems(30, seed=4)
    assert word_problems(10, seed=3) == word_problems(30, seed=3)[:10]


def test_word_problem_answers_follow_from_their_numbers():
    rows = word_problems(300, seed=1) + word_problems(100, split="heldout", seed=1)
    assert {row["kind"] for row in rows} == set(FORMULAS)
    assert {row["level"] for row in rows} == {1, 2}
    for row in rows:
        numbers = [int(n) for n in re.findall(r"\d+", row["problem"])]
        answer = FORMULAS[row["kind"]](*numbers)
        assert row["answer"] == str(answer) and answer > 0, row
        assert row["level"] == (1 if len(numbers) == 2 else 2)
        assert max(numbers) <= 30, "small numbers"
        assert row["prompt"].startswith(row["problem"])


def test_two_step_share_sets_the_difficulty():
    assert {row["level"] for row in word_problems(40, two_step_share=0.0)} == {1}
    assert {row["level"] for row in word_problems(40, two_step_share=1.0)} == {2}
    with pytest.raises(ValueError, match="two_step_share"):
        word_problems(1, two_step_share=2.0)


def test_train_and_heldout_problems_never_share_a_sum():
    """Disjoint by the operation and its numbers, whatever the seeds and sizes."""

    def signature(row):
        return row["kind"], tuple(re.findall(r"\d+", row["problem"]))

    train = {signature(row) for seed in (0, 1) for row in word_problems(400, seed=seed)}
    heldout = {
        signature(row) for seed in (0, 2) for row in word_problems(120, split="heldout", seed=seed)
    }
    assert len(heldout) > 100 and not train & heldout
    rows = word_problems(200, split="heldout")
    assert len({signature(row) for row in rows}) == 200, "no repeats within a split"
    assert all(split_of(f"{k}:{','.join(n)}") == "heldout" for k, n in map(signature, rows))


def test_impossible_sizes_and_unknown_splits_raise():
    with pytest.raises(ValueError, match="distinct"):
        word_problems(100000)
    with pytest.raises(ValueError, match="unknown split"):
        word_problems(3, split="test")
    with pytest.raises(ValueError, match="unknown split"):
        instruction_prompts(3, split="dev")


def test_math_rows_are_graded_by_the_scorer_and_the_benchmark(tmp_path):
    rows = word_problems(12, seed=5)
    items = read_prompts(write_jsonl(tmp_path / "train.jsonl", rows))
    bench = SmolArithmetic()
    data = bench.load(write_jsonl(tmp_path / "heldout.jsonl", rows))
    scorer = MathScorer(timeout_s=None)
    for item, eval_item, row in zip(items, data.items, rows, strict=True):
        assert item.id == row["id"] and item.prompt == [{"role": "user", "content": row["prompt"]}]
        # training prompts and the held-out evaluation ask in the same words
        assert bench.build_prompt(eval_item).text == row["prompt"]
        right, wrong = f"So it is {row['answer']}.", f"So it is {int(row['answer']) + 1}."
        responses = [Response(item.prompt, t, item.fields, item.where) for t in (right, wrong)]
        assert scorer.score(responses) == [10.0, 0.0]
        assert bench.score(eval_item, right)["score"] == 1.0
        assert bench.score(eval_item, wrong)["score"] == 0.0
    metrics = bench.aggregate([bench.score(item, "0") for item in data.items])
    assert metrics["accuracy"] == 0.0 and "accuracy_level_1" in metrics


def test_instruction_prompts_are_deterministic_and_in_the_ifeval_layout():
    rows = instruction_prompts(40, seed=2)
    assert rows == instruction_prompts(40, seed=2) != instruction_prompts(40, seed=3)
    ids = {instruction.id for instruction in INSTRUCTIONS}
    assert ids <= set(CHECKERS)
    for row in rows:
        assert set(row) == {"id", "key", "prompt", "instruction_id_list", "kwargs"}
        assert 1 <= len(row["instruction_id_list"]) <= 2
        assert len(row["kwargs"]) == len(row["instruction_id_list"])
        groups = [i.group for i in INSTRUCTIONS if i.id in row["instruction_id_list"]]
        assert len(groups) == len(set(groups)), "no two instructions that cannot both hold"
    seen = {i for row in instruction_prompts(300) for i in row["instruction_id_list"]}
    assert seen == ids, "every instruction type is used"


def test_text_splits_share_no_topic_prompt_or_key():
    train = instruction_prompts(300, seed=0)
    heldout = instruction_prompts(100, split="heldout", seed=1)

    def topic(prompt):
        return re.search(r"(?:about|Describe) (.+?)(?: to a child)?\.", prompt).group(1)

    assert not {topic(r["prompt"]) for r in train} & {topic(r["prompt"]) for r in heldout}
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in heldout}
    assert not {r["key"] for r in train} & {r["key"] for r in heldout}
    assert len({r["prompt"] for r in heldout}) == 100


def following(row):
    """A response that follows every instruction of ``row``, built from the kwargs alone."""
    by_id = dict(zip(row["instruction_id_list"], row["kwargs"], strict=True))
    # English enough for langdetect, which the case checkers consult
    words = "this is a short note about the weather and the people in our town".split()
    text = " ".join([*words, *by_id.get("keywords:existence", {}).get("keywords", [])]) + "."
    if "detectable_format:title" in by_id:
        text = "<<notes>>\n" + text
    if "startend:end_checker" in by_id:
        text += " " + by_id["startend:end_checker"]["end_phrase"]
    if "detectable_content:postscript" in by_id:
        text += "\nP.S. that is all."
    if "change_case:english_lowercase" in by_id:
        text = text.lower()
    if "change_case:english_capital" in by_id:
        text = text.upper()
    if "startend:quotation" in by_id:
        text = f'"{text}"'
    return text


def test_text_rows_are_checked_by_the_ifeval_scorer_and_benchmark(tmp_path):
    rows = instruction_prompts(60, split="heldout", seed=4)
    path = write_jsonl(tmp_path / "prompts.jsonl", rows)
    items = read_prompts(path)
    scorer = IFEvalScorer()
    good = [
        Response(i.prompt, following(r), i.fields, i.where)
        for i, r in zip(items, rows, strict=True)
    ]
    assert scorer.score(good) == [10.0] * len(rows)
    assert scorer.score([Response(i.prompt, "", i.fields, i.where) for i in items]) == [0.0] * 60
    bench = IFEval()
    data = bench.load(path)
    assert [item["key"] for item in data.items] == [row["key"] for row in rows]
    pairs = zip(data.items, rows, strict=True)
    records = [bench.score(item, following(row)) for item, row in pairs]
    assert bench.aggregate(records)["prompt_level_strict_acc"] == 1.0
    # one violated instruction is seen: every prompt asking for lowercase fails in capitals
    lower = [r for r in records if "change_case:english_lowercase" in r["instruction_id_list"]]
    assert lower
    for record, item in zip(records, data.items, strict=True):
        if record in lower:
            assert not bench.score(item, record["response"].upper())["prompt_strict"]
