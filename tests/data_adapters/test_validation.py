"""Bad input: every failure gets `FILE:LINE: FIELD: what is wrong`; strict vs skip_invalid."""

from __future__ import annotations

import json

import pytest

from data_adapters import (
    DataError,
    UnknownFormatError,
    format_report,
    get_adapter,
    load_samples,
    validate,
    write_invalid_rows,
)
from tests.data_adapters.conftest import make_png, write_jsonl

GOOD = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}


def problems_of(tmp_path, rows, format="trl", **kwargs) -> list[str]:
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    result = load_samples(path, format, skip_invalid=True, **kwargs)
    # paths shortened to keep the expected messages readable
    return [str(problem).replace(str(tmp_path) + "/", "") for problem in result.problems]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "Q?", "chosen": "yes"}, "d.jsonl:1: rejected: missing field"),
        ({"prompt": "Q?", "chosen": "yes", "rejected": None}, "d.jsonl:1: rejected: missing field"),
        ({"prompt": "Q?", "chosen": "  ", "rejected": "no"}, "d.jsonl:1: chosen: empty response"),
        ({"prompt": "Q?", "chosen": "yes", "rejected": ""}, "d.jsonl:1: rejected: empty response"),
        (
            {"prompt": "Q?", "chosen": "yes", "rejected": "yes "},
            "d.jsonl:1: rejected: identical to chosen",
        ),
        ({"prompt": " ", "chosen": "yes", "rejected": "no"}, "d.jsonl:1: prompt: empty prompt"),
        (
            {"prompt": "Q?", "chosen": 3, "rejected": "no"},
            "d.jsonl:1: chosen: expected a string or a list of messages, got int",
        ),
        (
            dict(GOOD, score_chosen="high"),
            "d.jsonl:1: score_chosen: score is not a number: 'high'",
        ),
        (dict(GOOD, score_chosen=True), "d.jsonl:1: score_chosen: score is not a number: True"),
        (dict(GOOD, score_rejected=[1]), "d.jsonl:1: score_rejected: score is not a number: list"),
        (dict(GOOD, score_chosen=float("nan")), "d.jsonl:1: score_chosen: score is NaN"),
        (dict(GOOD, score_chosen=float("inf")), "d.jsonl:1: score_chosen: score is infinite (inf)"),
        (
            dict(GOOD, score_rejected=float("-inf")),
            "d.jsonl:1: score_rejected: score is infinite (-inf)",
        ),
        (
            dict(GOOD, score_chosen=1e308),
            "d.jsonl:1: score_chosen: score too large in magnitude (1e+308); scores must lie "
            "within +-1e+30 so that calibration and the float32 loss stay finite: rescale them",
        ),
        (
            dict(GOOD, score_rejected="-2.5e200"),
            "d.jsonl:1: score_rejected: score too large in magnitude (-2.5e+200); scores must lie "
            "within +-1e+30 so that calibration and the float32 loss stay finite: rescale them",
        ),
    ],
)
def test_row_problem_messages(tmp_path, row, expected):
    assert problems_of(tmp_path, [row]) == [expected]


def test_malformed_json_and_non_object_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + '\n{"prompt": "x",\n"just a string"\n')
    result = load_samples(path, "trl", skip_invalid=True)
    assert [str(p) for p in result.problems] == [
        f"{path}:2: json: malformed JSON: Expecting property name enclosed in double quotes "
        "(column 16)",
        f"{path}:3: row: expected an object, got str",
    ]
    assert len(result.samples) == 1
    assert result.invalid[0].row is None


def test_required_scores_are_missing_fields(tmp_path):
    assert problems_of(tmp_path, [GOOD], "ultrafeedback") == [
        "d.jsonl:1: score_chosen: missing field"
    ]


def test_image_problems_missing_not_an_image_truncated(tmp_path):
    good = make_png(tmp_path / "ok.png", size=(64, 64))
    (tmp_path / "text.png").write_text("not really a png")
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    rows = [
        dict(GOOD, images=["missing.png"]),
        dict(GOOD, images=["text.png"]),
        dict(GOOD, images=["ok.png", "cut.png"]),
    ]
    for mode in ("header", "full"):
        problems = problems_of(tmp_path, rows, check_images=mode)
        assert problems[0] == "d.jsonl:1: images[0]: image not found: missing.png"
        assert problems[1] == "d.jsonl:2: images[0]: not an image: text.png"
        assert problems[2].startswith("d.jsonl:3: images[1]: truncated or corrupt image: cut.png (")
        assert len(problems) == 3
    # the default check is only a stat: a present but broken file passes
    assert problems_of(tmp_path, rows) == [problems[0]]


def test_more_placeholders_than_images(tmp_path, png):
    row = {
        "instruction": "<image> vs <image>?",
        "chosen": "a",
        "rejected": "b",
        "images": ["images/cat.png"],
    }
    assert problems_of(tmp_path, [row], "llamafactory_ranking") == [
        "d.jsonl:1: instruction: 2 <image> placeholders but only 1 image"
    ]
    row_without_images = {"instruction": "<image> what?", "chosen": "a", "rejected": "b"}
    assert problems_of(tmp_path, [row_without_images], "llamafactory_ranking") == [
        "d.jsonl:1: instruction: 1 <image> placeholders but only 0 images"
    ]


def test_fewer_placeholders_than_images(tmp_path, png):
    row = {
        "instruction": "<image> what?",
        "chosen": "a",
        "rejected": "b",
        "images": ["images/cat.png", "images/cat.png"],
    }
    assert problems_of(tmp_path, [row], "llamafactory_ranking") == [
        "d.jsonl:1: instruction: 2 images but only 1 <image> placeholders"
    ]


def test_vlfeedback_without_a_preference(tmp_path, png):
    same = {"Helpfulness": {"Rating": "3"}}
    row = {
        "prompt": "p",
        "img_path": "images/cat.png",
        "completions": [
            {"response": "x", "annotations": same},
            {"response": "y", "annotations": same},
        ],
    }
    assert problems_of(tmp_path, [row], "vlfeedback") == [
        "d.jsonl:1: completions: all rated completions have the same mean rating (3); no preference"
    ]
    row["completions"][1]["annotations"] = {"Helpfulness": {"Rating": "great"}}
    assert problems_of(tmp_path, [row], "vlfeedback") == [
        "d.jsonl:1: completions[1].annotations.Helpfulness: score is not a number: 'great'"
    ]


def test_hh_rlhf_problems(tmp_path):
    rows = [
        {"chosen": "\n\nHuman: hi\n\nAssistant:", "rejected": "\n\nHuman: hi\n\nAssistant: yo"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: bye\n\nAssistant: b"},
        {"chosen": "hello", "rejected": "\n\nHuman: hi\n\nAssistant: b"},
    ]
    assert problems_of(tmp_path, rows, "hh_rlhf") == [
        "d.jsonl:1: chosen: empty response",
        "d.jsonl:2: rejected: the conversation before the final reply differs from chosen's",
        "d.jsonl:3: chosen: text before the first 'Human:' turn",
    ]


def test_problems_carry_the_sample_id(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [dict(GOOD, id="row-7", rejected="yes")])
    problem = load_samples(path, "trl", skip_invalid=True).problems[0]
    assert (problem.sample_id, problem.line, problem.field) == ("row-7", 1, "rejected")


def test_strict_raises_one_error_with_the_first_20_problems_and_the_total(tmp_path):
    rows = [GOOD] + [dict(GOOD, chosen="") for _ in range(25)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as caught:
        load_samples(path, "trl")
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(f"{path}: 25 of 26 rows are invalid")
    assert lines[1:21] == [f"{path}:{n}: chosen: empty response" for n in range(2, 22)]
    assert lines[21] == "... 5 more not shown; 25 problems in 25 rows in total"
    assert len(lines) == 22
    assert len(caught.value.problems) == 25


def test_skip_invalid_returns_bad_rows_with_reasons(tmp_path):
    rows = [GOOD, dict(GOOD, chosen=""), dict(GOOD, id="x", score_chosen="bad")]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    result = load_samples(path, "trl", skip_invalid=True)
    assert [s.id for s in result.samples] == ["d:1"]
    assert [(row.line, row.sample_id) for row in result.invalid] == [(2, "d:2"), (3, "x")]
    assert result.invalid[1].row == rows[2]
    out = tmp_path / "invalid_rows.jsonl"
    write_invalid_rows(result.invalid, out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0] == {
        "file": str(path),
        "line": 2,
        "id": "d:2",
        "problems": [f"{path}:2: chosen: empty response"],
        "row": rows[1],
    }
    assert records[1]["problems"] == [f"{path}:3: score_chosen: score is not a number: 'bad'"]


def test_invalid_row_records_are_json_safe(png):
    rows = [dict(GOOD, chosen="", images=[png.read_bytes()], score_chosen=float("nan"))]
    invalid = load_samples(rows, "trl", skip_invalid=True).invalid
    record = invalid[0].to_dict()
    json.dumps(record, allow_nan=False)
    assert record["row"]["images"] == [f"<{len(png.read_bytes())} bytes>"]
    assert record["row"]["score_chosen"] == "nan"


def test_repeated_ids_are_made_unique(tmp_path):
    rows = [dict(GOOD, id="a"), dict(GOOD, id="a", chosen="maybe"), dict(GOOD, id="b")]
    samples = load_samples(rows, "trl").samples
    assert [s.id for s in samples] == ["a", "a#2", "b"]
    assert samples[1].meta["original_id"] == "a"


def test_registry_error_lists_the_valid_names():
    with pytest.raises(UnknownFormatError) as caught:
        get_adapter("alpaca")
    message = str(caught.value)
    assert message.startswith("unknown data format 'alpaca'; valid formats: trl, ultrafeedback")
    assert "llamafactory_ranking" in message and "columns" in message
    assert isinstance(caught.value, KeyError)
    with pytest.raises(UnknownFormatError, match="valid formats"):
        load_samples([GOOD], "alpaca")


def test_bad_options_are_rejected_up_front():
    with pytest.raises(ValueError, match='format "columns" needs a columns mapping'):
        load_samples([GOOD], "columns")
    with pytest.raises(ValueError, match="unknown field\\(s\\) in columns: answer; valid: id,"):
        load_samples([GOOD], "columns", columns={"answer": "x"})
    with pytest.raises(ValueError, match="check_images must be one of none, exists, header, full"):
        load_samples([GOOD], "trl", check_images="yes")
    with pytest.raises(ValueError, match="modality must be one of text, math, vision"):
        load_samples([GOOD], "trl", modality="audio")


def test_columns_problems_name_the_users_columns(tmp_path):
    columns = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    rows = [
        {"question": "Q", "good": "a"},
        {"question": "Q", "good": "", "bad": "b"},
    ]
    assert problems_of(tmp_path, rows, "columns", columns=columns) == [
        "d.jsonl:1: bad: missing field (mapped to rejected)",
        "d.jsonl:2: good: empty response",
    ]


def test_validate_clean_file_counts(tmp_path, png):
    rows = [GOOD, dict(GOOD, images=["images/cat.png"])]
    report = validate(write_jsonl(tmp_path / "d.jsonl", rows), "trl")
    assert report.ok and report.rows == 2 and report.valid == 2
    assert report.valid_per_modality == {"text": 1, "vision": 1}
    assert format_report(report) == (
        f"{tmp_path}/d.jsonl (format trl): 2 rows, 2 valid (text: 1, vision: 1), 0 invalid"
    )


def test_validate_lists_every_problem(tmp_path):
    rows = [GOOD, dict(GOOD, rejected="yes"), {"prompt": "x"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    report = validate(path, "trl")
    assert not report.ok and report.valid == 1 and len(report.invalid) == 2
    assert format_report(report).splitlines() == [
        f"{path} (format trl): 3 rows, 1 valid (text: 1), 2 invalid",
        f"{path}:2: rejected: identical to chosen",
        f"{path}:3: chosen: missing field",
        "2 problems in 2 rows in total",
    ]


SAME_IMAGES = (
    "d.jsonl:1: rejected: identical to chosen, and rejected_images are the same images (by content)"
)


def test_identical_pair_with_the_same_image_files_is_refused(tmp_path, png):
    row = dict(GOOD, rejected="yes", images=["images/cat.png"], rejected_images=["images/cat.png"])
    assert problems_of(tmp_path, [row]) == [SAME_IMAGES]


def test_identical_pair_with_a_byte_identical_copy_is_refused(tmp_path, png):
    (png.parent / "copy.png").write_bytes(png.read_bytes())
    row = dict(GOOD, rejected="yes", images=["images/cat.png"], rejected_images=["images/copy.png"])
    assert problems_of(tmp_path, [row]) == [SAME_IMAGES]
    # the same through `mmdpo data validate`, whatever the image check level
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    for level in ("full", "none"):
        report = validate(path, "trl", check_images=level)
        assert [str(p) for p in report.problems] == [f"{tmp_path}/{SAME_IMAGES}"]


def test_identical_texts_with_different_images_are_an_image_contrastive_pair(tmp_path, png):
    make_png(png.parent / "dog.png", color=(10, 200, 40))
    row = dict(GOOD, rejected="yes", images=["images/cat.png"], rejected_images=["images/dog.png"])
    assert problems_of(tmp_path, [row]) == []
    # different texts with the same images are an ordinary pair
    row = dict(GOOD, images=["images/cat.png"], rejected_images=["images/cat.png"])
    assert problems_of(tmp_path, [row]) == []


def test_image_order_matters_and_bytes_count(tmp_path, png):
    dog = make_png(png.parent / "dog.png", color=(10, 200, 40))
    swapped = dict(
        GOOD,
        rejected="yes",
        prompt="<image><image>Q?",
        images=["images/cat.png", "images/dog.png"],
        rejected_images=["images/dog.png", "images/cat.png"],
    )
    assert problems_of(tmp_path, [swapped]) == []
    # a path on one side, the same picture's bytes on the other (a Parquet or Hub image struct)
    in_bytes = dict(
        GOOD, rejected="yes", images=[str(dog)], rejected_images=[{"bytes": dog.read_bytes()}]
    )
    result = load_samples([in_bytes], "trl", skip_invalid=True)
    assert [str(p) for p in result.problems] == [SAME_IMAGES.replace("d.jsonl", "<memory>")]
