"""The pairs of fixed inputs, pinned through both entry points: the math builder
(``build_math_pairs``) and ``mmdpo pairs`` (math, math scored by a rule scorer, text, vision).

Every expected value below was worked out by hand from the rules (docs/scoring.md) and
matched the output of the two pair builders that existed before they were merged into one
core; the pin keeps that output, key order included, while the code moves.
"""

import argparse
import json
import math
from pathlib import Path

import pytest
from PIL import Image

import mmdpo.inference
from datagen.math_pairs import MathProblem, build_math_pairs
from datagen.pairs import add_pairs_arguments, best_vs_worst, run_pairs
from datagen.prompts import read_prompts

GOLD = r"\frac{1}{2}"
RIGHT_A = r"Half of 1 is \boxed{\frac{1}{2}}."  # 33 characters
RIGHT_B = r"1/2 = 0.5, so \boxed{0.5}."  # 26
RIGHT_C = r"Dividing, we get \boxed{\dfrac{1}{2}}"  # 37
WRONG_A = r"So the answer is \boxed{2}."  # 27
WRONG_B = r"The result is \boxed{\frac{1}{3}}."


def ordered(value):
    """Dicts as lists of items, recursively, so that == also compares key order."""
    if isinstance(value, dict):
        return [(key, ordered(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [ordered(item) for item in value]
    return value


def math_meta(problem_id, gold, correct, answers, indices, sizes, extra=None):
    """The math builder's meta, in its order: the problem's meta, then its own keys."""
    return {
        **(extra or {}),
        "problem_id": problem_id,
        "gold": gold,
        "correct_chosen": correct[0],
        "correct_rejected": correct[1],
        "answer_chosen": answers[0],
        "answer_rejected": answers[1],
        "index_chosen": indices[0],
        "index_rejected": indices[1],
        "num_responses": sizes[0],
        "num_unique_responses": sizes[1],
    }


def problems(with_scores: bool) -> list[MathProblem]:
    chat = [{"role": "system", "content": "Think."}, {"role": "user", "content": "Half of one?"}]
    rows = [
        ("m1", "What is 1/2?", [RIGHT_A, RIGHT_B, WRONG_A, RIGHT_C, f" {RIGHT_A}\n", ""],
         [9.0, 7.5, 3.0, 8.0, 9.9, 1.0], {"level": 2}),
        ("m2", chat, [RIGHT_A, WRONG_A, RIGHT_B, WRONG_B, "I do not know."],
         [8.0, 5.0, 8.0, 1.0, math.nan], {}),
        ("m3", "Again?", [WRONG_A, WRONG_B], [9.0, 8.0], {}),
        ("m4", "Once more?", [RIGHT_A, WRONG_A], [6.0, 1.0], {}),
        ("m5", "Last?", [RIGHT_A, RIGHT_A + " ", RIGHT_A], [9.0, 9.0, 9.0], {}),
        ("m6", "Rule?", [WRONG_B, RIGHT_C, RIGHT_A, WRONG_A], None, {}),
    ]  # fmt: skip
    return [
        MathProblem(pid, prompt, GOLD, texts, scores if with_scores else None, meta)
        for pid, prompt, texts, scores, meta in rows
    ]


def pair_rows(samples) -> list[dict]:
    return [
        {
            "id": s.id,
            "prompt": s.prompt,
            "chosen": s.chosen,
            "rejected": s.rejected,
            "scores": [s.score_chosen, s.score_rejected],
            "modality": s.modality,
            "source": s.source,
            "meta": s.meta,
        }
        for s in samples
    ]


def test_math_builder_with_given_scores():
    """m1: RIGHT_A 9.0 chosen; correct responses below it: RIGHT_B 7.5, RIGHT_C 8.0 -> the
    lowest, RIGHT_B; the whitespace copy of RIGHT_A (9.9) and "" dropped first.
    m2: NaN dropped; RIGHT_A wins the 8.0 tie by index; no correct one below 8.0, so the
    lowest incorrect, WRONG_B (1.0). m3: nothing correct. m4: best correct 6.0, not above 6.
    m5: three copies of one text, nothing to reject. m6 (no scores): the rule, 10 correct and
    0 not: first correct RIGHT_C (index 1) against first incorrect WRONG_B (index 0)."""
    result = build_math_pairs(problems(with_scores=True), workers=2, timeout_s=None)
    user = [{"role": "user", "content": "What is 1/2?"}]
    expected = [
        {"id": "m1", "prompt": user, "chosen": RIGHT_A, "rejected": RIGHT_B,
         "scores": [9.0, 7.5], "modality": "math", "source": "math_pairs",
         "meta": math_meta("m1", GOLD, (True, True), (GOLD, GOLD), (0, 1), (6, 4),
                           {"level": 2})},
        {"id": "m2", "prompt": problems(True)[1].prompt, "chosen": RIGHT_A, "rejected": WRONG_B,
         "scores": [8.0, 1.0], "modality": "math", "source": "math_pairs",
         "meta": math_meta("m2", GOLD, (True, False), (GOLD, r"\frac{1}{3}"), (0, 3), (5, 5))},
        {"id": "m6", "prompt": [{"role": "user", "content": "Rule?"}], "chosen": RIGHT_C,
         "rejected": WRONG_B, "scores": [10.0, 0.0], "modality": "math", "source": "math_pairs",
         "meta": math_meta("m6", GOLD, (True, False), (GOLD, r"\frac{1}{3}"), (1, 0), (4, 4))},
    ]  # fmt: skip
    assert ordered(pair_rows(result.samples)) == ordered(expected)
    report = result.report
    assert (report.problems, report.responses, report.pairs, report.no_pair) == (6, 22, 3, 3)
    assert (report.duplicates_dropped, report.empty_dropped, report.nan_score_dropped) == (3, 1, 1)
    assert (report.no_correct, report.no_chosen, report.no_rejected) == (1, 1, 1)
    assert (report.rejected_correct, report.rejected_incorrect) == (1, 2)


def test_math_builder_with_a_scorer_callable():
    """Scorer: 7 + len/100 if correct, else len/10. m1: RIGHT_C 7.37 chosen, RIGHT_B 7.26 the
    lowest correct below it. m2: RIGHT_A 7.33 against RIGHT_B 7.26 (the NaN is gone: the
    scorer rates "I do not know." 1.4). m4: RIGHT_A 7.33 now above 6, against WRONG_A 2.7.
    m6: RIGHT_C 7.37 against RIGHT_A 7.33. The scorer never sees the empty response."""
    seen = []

    def scorer(prompt, response, correct):
        seen.append(response)
        return 7 + len(response) / 100 if correct else len(response) / 10

    result = build_math_pairs(problems(with_scores=False), scorer=scorer, source="numina")
    rows = pair_rows(result.samples)
    assert [(r["id"], r["chosen"], r["rejected"]) for r in rows] == [
        ("m1", RIGHT_C, RIGHT_B),
        ("m2", RIGHT_A, RIGHT_B),
        ("m4", RIGHT_A, WRONG_A),
        ("m6", RIGHT_C, RIGHT_A),
    ]
    assert [value for r in rows for value in r["scores"]] == pytest.approx(
        [7.37, 7.26, 7.33, 7.26, 7.33, 2.7, 7.37, 7.33]
    )
    assert [r["meta"]["index_chosen"] for r in rows] == [3, 0, 0, 1]
    assert [r["meta"]["index_rejected"] for r in rows] == [1, 2, 1, 2]
    assert {r["source"] for r in rows} == {"numina"}
    assert "" not in seen and len(seen) == 22 - 3 - 1
    report = result.report
    assert (report.pairs, report.nan_score_dropped, report.no_chosen) == (4, 0, 0)
    assert (report.no_correct, report.no_rejected) == (1, 1)
    assert (report.rejected_correct, report.rejected_incorrect) == (3, 1)


def test_best_vs_worst_drops_nan_scores(tmp_path):
    """q1: "b" is NaN; "c" 3.0 beats "a" 1.0. q2: one response left, no pair.

    ``num_unique_responses`` counts distinct non-empty responses, NaN-scored ones included (3
    here), as the math builder always did; the old best-vs-worst builder counted only the
    scored ones (2). The one output that changed when the two builders became one core.
    """
    rows = [{"id": "q1", "prompt": "Hi", "topic": "x"}, {"id": "q2", "prompt": "Yo"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    items = read_prompts(path)
    samples, report = best_vs_worst(
        items,
        [["a", "b", "c"], ["d", "e", "f"]],
        [[1.0, math.nan, 3.0], [math.nan, math.nan, 2.0]],
        modality="text",
        source="t",
    )
    (sample,) = samples
    assert (sample.id, sample.chosen, sample.rejected) == ("q1", "c", "a")
    assert ordered(sample.meta) == ordered(
        {"topic": "x", "prompt_id": "q1", "index_chosen": 2, "index_rejected": 0,
         "num_responses": 3, "num_unique_responses": 3}
    )  # fmt: skip
    assert (report.prompts, report.responses, report.pairs) == (2, 6, 1)
    assert (report.nan_score_dropped, report.too_few_distinct, report.all_tied) == (3, 1, 0)


# ---------------------------------------------------------------------------- mmdpo pairs


@pytest.fixture
def run_command(tmp_path, tiny_llama_dir, monkeypatch, capsys):
    """Run ``mmdpo pairs`` on ROWS with FIXED responses; returns (rows, report, printed)."""

    def run(name, rows, fixed, *words):
        def fake_generate(model, processing, prompts, **settings):
            seen: dict[str, int] = {}
            out = []
            for prompt in [p for p in prompts for _ in range(settings["num_samples"])]:
                out.append(fixed[prompt.text][seen.get(prompt.text, 0)])
                seen[prompt.text] = seen.get(prompt.text, 0) + 1
            return out, {"n": len(out), "seconds": 0.0}

        monkeypatch.setattr(mmdpo.inference, "generate_texts", fake_generate)
        source = tmp_path / f"{name}.jsonl"
        source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        out = tmp_path / f"{name}.out.jsonl"
        parser = argparse.ArgumentParser()
        add_pairs_arguments(parser)
        args = parser.parse_args(
            [str(source), str(out), "--model", str(tiny_llama_dir), "--no-progress",
             "--verify-timeout", "0", *words]
        )  # fmt: skip
        capsys.readouterr()
        assert run_pairs(args) == 0
        printed = capsys.readouterr().out.replace(str(tmp_path), "TMP")
        pairs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        report = json.loads(Path(f"{out}.report.json").read_text(encoding="utf-8"))
        del report["model"], report["base_model"]  # the tiny model's temporary folder
        text = json.dumps([pairs, report]).replace(str(tmp_path), "TMP")
        return *json.loads(text), printed

    return run


def settings(name, task, scorer, k, min_chosen_score):
    return {
        "prompts_file": f"TMP/{name}.jsonl", "out": f"TMP/{name}.out.jsonl", "adapter": None,
        "task": task, "scorer": scorer, "k": k, "temperature": 0.8, "top_p": 1.0,
        "max_new_tokens": 512, "seed": 0, "min_chosen_score": min_chosen_score,
    }  # fmt: skip


MATH_ROWS = [
    {"id": "p1", "problem": "What is 1 + 1?", "answer": "2"},
    {"id": "p2", "question": "What is 2 + 3?", "gold": "5", "level": 1},
    {"prompt": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Half of one?"}], "answer": "1/2"},
    {"id": "p4", "problem": "What is 3 + 3?", "answer": "6"},
]  # fmt: skip


def math_counts(prompts, pairs, dropped, reasons, rejected, correct_responses):
    return {
        "prompts": prompts, "responses": 4 * prompts, "pairs": pairs,
        "duplicates_dropped": dropped[0], "empty_dropped": dropped[1], "nan_score_dropped": 0,
        "no_correct": reasons[0], "no_chosen": reasons[1], "no_rejected": reasons[2],
        "rejected_correct": rejected[0], "rejected_incorrect": rejected[1],
        "no_pair": prompts - pairs, "correct_responses": correct_responses,
    }  # fmt: skip


def test_pairs_command_math_rule(run_command):
    """p1: (first correct, first incorrect), a copy and a blank dropped. p2: nothing right.
    math:3 (no id): RIGHT_B first correct (index 1) against WRONG_A. p4: four copies of "6",
    nothing to reject. Correct responses, copies included: 2 + 0 + 3 + 4 = 9."""
    fixed = {
        "What is 1 + 1?": ["So \\boxed{2}.", "So  \\boxed{2}.", "It is \\boxed{3}.", "   "],
        "What is 2 + 3?": ["4", "6", "7", "8"],
        "Be brief.\n\nHalf of one?": [WRONG_A, RIGHT_B, RIGHT_A, RIGHT_B + " "],
        "What is 3 + 3?": ["6", "6 ", "\n6", "6"],
    }
    pairs, report, printed = run_command("math", MATH_ROWS, fixed, "--k", "4", "--source", "gsm")
    expected = [
        {"id": "p1", "prompt": [{"role": "user", "content": "What is 1 + 1?"}],
         "chosen": "So \\boxed{2}.", "rejected": "It is \\boxed{3}.",
         "score_chosen": 10.0, "score_rejected": 0.0, "modality": "math", "source": "gsm",
         "meta": math_meta("p1", "2", (True, False), ("2", "3"), (0, 2), (4, 2),
                           {"answer": "2"})},
        {"id": "math:3", "prompt": MATH_ROWS[2]["prompt"], "chosen": RIGHT_B, "rejected": WRONG_A,
         "score_chosen": 10.0, "score_rejected": 0.0, "modality": "math", "source": "gsm",
         "meta": math_meta("math:3", "1/2", (True, False), (GOLD, "2"), (1, 0), (4, 3),
                           {"answer": "1/2"})},
    ]  # fmt: skip
    assert ordered(pairs) == ordered(expected)
    counts = math_counts(4, 2, (5, 1), (1, 0, 1), (0, 2), 9)
    assert ordered(report) == ordered(
        {**settings("math", "math", "math (rule: 10 correct, 0 not)", 4, 6.0),
         "counts": counts, "generation": {"n": 16, "seconds": 0.0}}
    )  # fmt: skip
    assert printed.splitlines()[:2] == [
        "4 prompts, 16 responses -> 2 pairs (2 prompts without a pair)",
        "  duplicates_dropped: 5, empty_dropped: 1, nan_score_dropped: 0, no_correct: 1, "
        "no_chosen: 0, no_rejected: 1, rejected_correct: 0, rejected_incorrect: 2, "
        "correct_responses: 9",
    ]


def test_pairs_command_math_scored_by_ifeval(run_command):
    """Scores from ifeval (no commas: 10, else 0), correctness from math-verify. p1: "Thus"
    (correct, 10) against the lower-scoring correct "So," (0). p2: nothing right. math:3:
    RIGHT_A (10) against RIGHT_B (0, the first of two correct 0s). p4: "\\boxed{6}" against
    "Six, \\boxed{6}". Correct responses: 2 + 0 + 3 + 2 = 7."""
    rows = [dict(row, instruction_id_list=["punctuation:no_comma"]) for row in MATH_ROWS]
    fixed = {
        "What is 1 + 1?": ["So, \\boxed{2}.", "Thus \\boxed{2}.", "It is \\boxed{3}.", "Well, 4"],
        "What is 2 + 3?": ["4", "6", "7", "8"],
        "Be brief.\n\nHalf of one?": [WRONG_A, RIGHT_B, RIGHT_A, "Well, " + RIGHT_A],
        "What is 3 + 3?": ["Six, \\boxed{6}", "\\boxed{6}", "\\boxed{5}", "7"],
    }
    pairs, report, _ = run_command(
        "mathif", rows, fixed, "--k", "4", "--scorer", "ifeval", "--min-chosen-score", "5",
        "--save-responses",
    )  # fmt: skip
    no_comma = ["punctuation:no_comma"]
    expected = [
        ("p1", "Thus \\boxed{2}.", "So, \\boxed{2}.", ("2", "2"), (1, 0), "2"),
        ("mathif:3", RIGHT_A, RIGHT_B, (GOLD, GOLD), (2, 1), "1/2"),
        ("p4", "\\boxed{6}", "Six, \\boxed{6}", ("6", "6"), (1, 0), "6"),
    ]
    assert ordered(pairs) == ordered(
        [
            {"id": pid, "prompt": row["prompt"], "chosen": chosen, "rejected": rejected,
             "score_chosen": 10.0, "score_rejected": 0.0, "modality": "math", "source": "pairs",
             "meta": math_meta(pid, gold, (True, True), answers, indices, (4, 4),
                               {"answer": gold, "instruction_id_list": no_comma})}
            for (pid, chosen, rejected, answers, indices, gold), row in zip(
                expected, pairs, strict=True
            )
        ]
    )  # fmt: skip
    assert [row["prompt"][-1]["content"] for row in pairs] == [
        "What is 1 + 1?", "Half of one?", "What is 3 + 3?"
    ]  # fmt: skip
    counts = math_counts(4, 3, (0, 0), (1, 0, 0), (3, 0), 7)
    assert ordered(report) == ordered(
        {**settings("mathif", "math", "ifeval", 4, 5.0), "counts": counts,
         "generation": {"n": 16, "seconds": 0.0}}
    )  # fmt: skip


TEXT_ROWS = [
    {"id": "q1", "prompt": "Talk.", "instruction_id_list": ["punctuation:no_comma"], "topic": "x"},
    {"id": "q2", "prompt": "Talk more.", "instruction_id_list": ["punctuation:no_comma"]},
    {"id": "q3", "prompt": "Say one thing.",
     "instruction_id_list": ["punctuation:no_comma", "keywords:existence"],
     "kwargs": [{}, {"keywords": ["moon"]}]},
    {"id": "q4", "prompt": "Repeat.", "instruction_id_list": ["punctuation:no_comma"]},
]  # fmt: skip


def text_meta(row, indices, sizes):
    extras = {k: v for k, v in row.items() if k not in ("id", "prompt")}
    return {
        **extras, "prompt_id": row["id"], "index_chosen": indices[0],
        "index_rejected": indices[1], "num_responses": sizes[0],
        "num_unique_responses": sizes[1],
    }  # fmt: skip


def test_pairs_command_text_best_vs_worst(run_command):
    """ifeval scores. q1: 10, 0, 10, 0 -> "fine" against "a, b". q2: all 10, tied (one copy).
    q3: 10, 5, 0, 5 -> "the moon" against "sun, star". q4: two copies and a blank leave one
    distinct response: no pair."""
    fixed = {
        "Talk.": ["fine", "a, b", "ok then", "c, d"],
        "Talk more.": ["x", "y", "z", "x"],
        "Say one thing.": ["the moon", "moon, sun", "sun, star", "no"],
        "Repeat.": ["same", " same", "", "same\n"],
    }
    pairs, report, printed = run_command(
        "text", TEXT_ROWS, fixed, "--k", "4", "--task", "text", "--scorer", "ifeval"
    )
    expected = [
        {"id": "q1", "prompt": [{"role": "user", "content": "Talk."}], "chosen": "fine",
         "rejected": "a, b", "score_chosen": 10.0, "score_rejected": 0.0, "modality": "text",
         "source": "pairs", "meta": text_meta(TEXT_ROWS[0], (0, 1), (4, 4))},
        {"id": "q3", "prompt": [{"role": "user", "content": "Say one thing."}],
         "chosen": "the moon", "rejected": "sun, star", "score_chosen": 10.0,
         "score_rejected": 0.0, "modality": "text", "source": "pairs",
         "meta": text_meta(TEXT_ROWS[2], (0, 2), (4, 4))},
    ]  # fmt: skip
    assert ordered(pairs) == ordered(expected)
    counts = {
        "prompts": 4, "responses": 16, "pairs": 2, "duplicates_dropped": 3, "empty_dropped": 1,
        "nan_score_dropped": 0, "too_few_distinct": 1, "all_tied": 1, "no_pair": 2,
    }  # fmt: skip
    assert ordered(report) == ordered(
        {**settings("text", "text", "ifeval", 4, None), "counts": counts,
         "generation": {"n": 16, "seconds": 0.0}}
    )  # fmt: skip
    assert printed.splitlines()[:2] == [
        "4 prompts, 16 responses -> 2 pairs (2 prompts without a pair)",
        "  duplicates_dropped: 3, empty_dropped: 1, nan_score_dropped: 0, too_few_distinct: 1, "
        "all_tied: 1",
    ]


def test_pairs_command_vision_best_vs_worst(run_command, tmp_path):
    """objects scores (10 x (1 - hallucinated / mentioned)). v1 (an image, knows a dog):
    "A dog." 10 against "A cat." 0, modality vision. v2 (no image): "A cat." 10 against
    "A person and a dog." 5, modality text."""
    image = tmp_path / "img" / "a.png"
    image.parent.mkdir()
    Image.new("RGB", (8, 6), (200, 30, 40)).save(image)
    rows = [
        {"id": "v1", "prompt": "Describe.", "images": ["img/a.png"], "objects": ["dog"]},
        {"id": "v2", "prompt": "Describe the scene.", "objects": ["cat", "person"]},
    ]
    fixed = {
        "Describe.": ["A dog.", "A dog and a cat.", "A cat."],
        "Describe the scene.": ["A cat.", "A person and a dog.", "A cat and a person."],
    }
    pairs, report, _ = run_command(
        "vis", rows, fixed, "--k", "3", "--task", "vision", "--scorer", "objects"
    )
    image_prompt = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}
    ]
    expected = [
        {"id": "v1", "prompt": image_prompt, "chosen": "A dog.", "rejected": "A cat.",
         "images": ["TMP/img/a.png"], "score_chosen": 10.0, "score_rejected": 0.0,
         "modality": "vision", "source": "pairs",
         "meta": {"objects": ["dog"], "prompt_id": "v1", "index_chosen": 0,
                  "index_rejected": 2, "num_responses": 3, "num_unique_responses": 3}},
        {"id": "v2", "prompt": [{"role": "user", "content": "Describe the scene."}],
         "chosen": "A cat.", "rejected": "A person and a dog.", "score_chosen": 10.0,
         "score_rejected": 5.0, "modality": "text", "source": "pairs",
         "meta": {"objects": ["cat", "person"], "prompt_id": "v2", "index_chosen": 0,
                  "index_rejected": 1, "num_responses": 3, "num_unique_responses": 3}},
    ]  # fmt: skip
    assert ordered(pairs) == ordered(expected)
    assert report["counts"] == {
        "prompts": 2, "responses": 6, "pairs": 2, "duplicates_dropped": 0, "empty_dropped": 0,
        "nan_score_dropped": 0, "too_few_distinct": 0, "all_tied": 0, "no_pair": 0,
    }  # fmt: skip
