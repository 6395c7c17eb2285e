"""``mmdpo score``: each scorer on hand-worked cases, the reward model batched, the output file
read back by the trl adapter, and the input never overwritten."""

import argparse
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from data_adapters import load_samples
from datagen.output import write_samples
from datagen.registry import SCORERS, get_scorer
from datagen.scorers import IFEvalScorer, MathScorer, ObjectsScorer, Response, RewardModelScorer
from datagen.scoring import add_score_arguments, run_score
from mmdpo.tiny import tiny_reward_model
from mmdpo.types import PreferenceSample

ROWS = [
    {
        "id": "a",
        "prompt": "What is half of one? Mention the moon.",
        "chosen": "Under the moon it is \\boxed{\\frac{1}{2}}.",
        "rejected": "Well, it is 3.",
        "answer": "1/2",
        "instruction_id_list": ["punctuation:no_comma", "keywords:existence"],
        "kwargs": [{}, {"keywords": ["moon"]}],
        "objects": ["dog", "person"],
        "r1": 9,
        "meta": {"r2": "2.5"},
    },
    {
        "id": "b",
        "prompt": [{"role": "user", "content": "Add two and two, no commas."}],
        "chosen": "It is 4",
        "rejected": "A dog, a cat and a man: 5",
        "answer": "4",
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
        "objects": ["dog", "person"],
        "r1": "7",
        "meta": {"r2": 7},
    },
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def score_args(*words: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_score_arguments(parser)
    return parser.parse_args([*words, "--no-progress"])


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", ROWS)


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, session_tokenizer) -> Path:
    directory = tmp_path_factory.mktemp("tiny-rm")
    model = tiny_reward_model(session_tokenizer, seed=3)
    model.save_pretrained(directory)
    session_tokenizer.save_pretrained(directory)
    return directory


def scored(path: Path) -> list[tuple[float, float]]:
    return [(s.score_chosen, s.score_rejected) for s in load_samples(path, "trl").samples]


def test_registry_and_unknown_name_lists_valid_ones():
    assert list(SCORERS) == ["reward_model", "math", "ifeval", "objects", "column"]
    with pytest.raises(ValueError, match="unknown scorer 'judge'; valid scorers: reward_model, "):
        get_scorer("judge")


def test_reward_model_batched_equals_one_at_a_time_and_a_plain_forward(reward_model_dir):
    scorer = RewardModelScorer.from_pretrained(str(reward_model_dir), batch_size=4, progress=False)
    prompt = [{"role": "user", "content": "Say something about numbers."}]
    texts = ["one", "two three four five six", "7 8 9", "a much longer answer " * 5, "x"]
    responses = [Response(prompt, text, {}, "test:1") for text in texts]
    batched = scorer.score(responses)
    scorer.batch_size = 1
    alone = scorer.score(responses)
    assert batched == pytest.approx(alone, abs=1e-5)
    assert len(set(round(value, 6) for value in alone)) == len(texts)  # the text matters
    # One response by hand: the chat template's text, the model's single logit.
    text = scorer.tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": "x"}], tokenize=False
    )
    ids = scorer.tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        expected = scorer.model(**ids).logits[0, 0].item()
    assert alone[-1] == pytest.approx(expected, abs=1e-6)


def test_score_command_reward_model_round_trips_through_the_trl_adapter(
    pairs_file, reward_model_dir, tmp_path
):
    out = tmp_path / "scored.jsonl"
    args = score_args(str(pairs_file), str(out), "--scorer", "reward_model")
    args.reward_model = str(reward_model_dir)
    args.batch_size = 3
    assert run_score(args) == 0
    original = load_samples(pairs_file, "trl").samples
    back = load_samples(out, "trl").samples
    assert [s.id for s in back] == ["a", "b"]
    for before, after in zip(original, back, strict=True):
        assert (after.prompt, after.chosen, after.rejected) == (
            before.prompt,
            before.chosen,
            before.rejected,
        )
        assert after.has_scores
    # The written scores are the scorer's own.
    scorer = RewardModelScorer.from_pretrained(str(reward_model_dir), progress=False)
    expected = scorer.score(
        [
            Response(s.prompt, getattr(s, side), {}, "")
            for s in original
            for side in ("chosen", "rejected")
        ]
    )
    assert [v for pair in scored(out) for v in pair] == pytest.approx(expected, abs=1e-5)
    row = json.loads(out.read_text().splitlines()[0])
    assert row["meta"]["file"] == str(pairs_file) and row["meta"]["line"] == 1


def test_math_scorer_right_and_wrong(pairs_file, tmp_path):
    """Row a: \\frac{1}{2} equals the gold 1/2 -> 10; "3" does not -> 0.
    Row b: the last number 4 equals 4 -> 10; 5 does not -> 0."""
    out = tmp_path / "math.jsonl"
    assert (
        run_score(
            score_args(str(pairs_file), str(out), "--scorer", "math", "--verify-timeout", "0")
        )
        == 0
    )
    assert scored(out) == [(10.0, 0.0), (10.0, 0.0)]


def test_math_scorer_needs_a_gold_answer():
    response = Response([{"role": "user", "content": "1+1?"}], "2", {"question": "x"}, "f.jsonl:4")
    with pytest.raises(ValueError, match=r"f.jsonl:4: answer/gold/gt: missing field"):
        MathScorer(timeout_s=None).score([response])
    with pytest.raises(
        ValueError, match=r"f.jsonl:4: solution: missing field: no gold answer \(set --gold-field"
    ):
        MathScorer("solution", timeout_s=None).score([response])


def test_ifeval_scorer_share_of_instructions_followed(pairs_file, tmp_path):
    """Row a (no_comma, mention "moon"): chosen follows both -> 10; "Well, it is 3." has a
    comma and no moon -> 0. Row b (no_comma): "It is 4" -> 10; the comma list -> 0.
    And one instruction of two followed -> 5."""
    out = tmp_path / "ifeval.jsonl"
    assert run_score(score_args(str(pairs_file), str(out), "--scorer", "ifeval")) == 0
    assert scored(out) == [(10.0, 0.0), (10.0, 0.0)]
    half = Response([], "Bright, the moon.", ROWS[0], "f:1")
    assert IFEvalScorer().score([half]) == [5.0]


def test_objects_scorer_hallucination_share(pairs_file, tmp_path):
    """Known objects: dog, person. "A dog, a cat and a man" mentions dog, cat, person(man):
    one of three hallucinated -> 10 x (1 - 1/3). No object mentioned -> 10."""
    out = tmp_path / "objects.jsonl"
    assert run_score(score_args(str(pairs_file), str(out), "--scorer", "objects")) == 0
    (a_chosen, a_rejected), (b_chosen, b_rejected) = scored(out)
    assert (a_chosen, a_rejected, b_chosen) == (10.0, 10.0, 10.0)
    assert b_rejected == pytest.approx(10 * 2 / 3)
    all_wrong = Response([], "Two cats on a sofa.", {"objects": ["dog"]}, "f:1")
    assert ObjectsScorer().score([all_wrong]) == [0.0]


def test_column_scorer_copies_ratings_from_columns_and_nested_meta(pairs_file, tmp_path):
    out = tmp_path / "column.jsonl"
    args = score_args(
        str(pairs_file), str(out), "--scorer", "column", "--chosen-field", "r1",
        "--rejected-field", "meta.r2",
    )  # fmt: skip
    assert run_score(args) == 0
    assert scored(out) == [(9.0, 2.5), (7.0, 7.0)]


def test_column_scorer_names_the_missing_field(pairs_file, tmp_path):
    args = score_args(
        str(pairs_file), str(tmp_path / "o.jsonl"), "--scorer", "column", "--chosen-field",
        "r1", "--rejected-field", "r9",
    )  # fmt: skip
    with pytest.raises(
        ValueError, match=rf"{pairs_file}:1: r9: missing field \(set --rejected-field"
    ):
        run_score(args)
    assert not (tmp_path / "o.jsonl").exists()


def test_never_overwrites_the_input(pairs_file, tmp_path):
    before = pairs_file.read_bytes()
    for out in (pairs_file, tmp_path / "." / "pairs.jsonl"):
        with pytest.raises(ValueError, match="is the input file"):
            run_score(score_args(str(pairs_file), str(out), "--scorer", "math", "--overwrite"))
    link = tmp_path / "link.jsonl"
    link.symlink_to(pairs_file)
    with pytest.raises(ValueError, match="is the input file"):
        run_score(score_args(str(pairs_file), str(link), "--scorer", "math", "--overwrite"))
    assert pairs_file.read_bytes() == before


def test_existing_output_needs_overwrite(pairs_file, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    args = ["--scorer", "column", "--chosen-field", "r1", "--rejected-field", "r1"]
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        run_score(score_args(str(pairs_file), str(out), *args))
    assert out.read_text() == "old\n"
    assert run_score(score_args(str(pairs_file), str(out), *args, "--overwrite")) == 0
    assert scored(out) == [(9.0, 9.0), (7.0, 7.0)]


def test_missing_input_and_missing_model_are_user_errors(pairs_file, tmp_path):
    with pytest.raises(FileNotFoundError):
        run_score(score_args(str(tmp_path / "none.jsonl"), str(tmp_path / "o"), "--scorer", "math"))
    with pytest.raises(ValueError, match="reward_model scorer needs --model"):
        run_score(
            score_args(str(pairs_file), str(tmp_path / "o.jsonl"), "--scorer", "reward_model")
        )


def test_images_in_memory_are_saved_and_read_back_as_paths(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    sample = PreferenceSample(
        id="v/1",
        prompt=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}],
        chosen="A red square.",
        rejected="A cat.",
        images=[buffer.getvalue()],
        score_chosen=10.0,
        score_rejected=0.0,
        modality="vision",
    )
    out = write_samples([sample], tmp_path / "v.jsonl")
    (back,) = load_samples(out, "trl", check_images="full").samples
    assert back.modality == "vision" and back.prompt == sample.prompt
    assert Path(back.images[0]).read_bytes() == buffer.getvalue()
    assert (back.score_chosen, back.score_rejected) == (10.0, 0.0)
