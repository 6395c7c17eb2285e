"""IFEval checks: a passing and a failing response per instruction id, loose vs strict, metrics."""

import json
import os
import sys
from pathlib import Path

import pytest

from eval.ifeval import (
    CHECKERS,
    IFEVAL_VERSION,
    IFEvalPrompt,
    UnknownInstructionError,
    check_response,
    load_ifeval,
    loose_variants,
    score,
    text_utils,
)

GERMAN = "Der schnelle braune Fuchs springt über den faulen Hund und läuft in den Wald hinein."
RUSSIAN = "Быстрая коричневая лиса прыгает через ленивую собаку и бежит в тёмный лес."
ENGLISH = "The quick brown fox jumps over the lazy dog and runs into the forest to find friends."

# (instruction id, kwargs, a response that follows it, a response that does not)
CASES = [
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": "at least"},
        "The NASA and ESA teams met the WHO.",
        "The NASA team met.",
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "Only NASA here.",
        "I DON'T know.",
    ),  # I, DO, N'T: three capital tokens, as in Treebank
    ("change_case:english_capital", {}, ENGLISH.upper(), ENGLISH),
    ("change_case:english_capital", {}, ENGLISH.upper(), GERMAN.upper()),
    ("change_case:english_lowercase", {}, ENGLISH.lower(), ENGLISH),
    ("change_case:english_lowercase", {}, ENGLISH.lower(), GERMAN.lower()),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a poem about cats."},
        "write a poem about cats. Cats are soft.",
        "Here is a poem about cats.",
    ),
    ("combination:two_responses", {}, "Answer one.\n******\nAnswer two.", "Same.\n******\nSame."),
    ("combination:two_responses", {}, "******\nA\n******\nB\n******", "A\n******\n \n******\nB"),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], at [address].",
        "Dear [name], at home.",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "Hello.\n\np. s. See you.",
        "Hello. See you. PS bye.",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.P.S"},
        "Hi.\nP.P.S. More.",
        "Hi.\nP.S. Only one.",
    ),
    ("detectable_format:constrained_response", {}, "Hmm. My answer is maybe.", "No, it is not."),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', "{'a': 1}"),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nIntro.\nSection 2\nBody.",
        "Section 1\nIntro.\nSECTION 2\nBody.",
    ),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 2},
        "Fruit:\n* apples\n  - pears",
        "* apples\n* pears\n- plums",
    ),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1}, "* one", "**bold** is no bullet"),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "*intro* and **details**",
        "*intro* and ** ** and *\nbroken*",
    ),
    ("detectable_format:title", {}, "<<Ode to Joy>>\nText.", "<< >>\nOde to Joy"),
    ("keywords:existence", {"keywords": ["cat", "dog"]}, "The Cat and the DOGS.", "The cat sat."),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["run", "bark"]},
        "Dogs running and barking.",
        "Dogs RUN fast.",
    ),
    (
        "keywords:frequency",
        {"keyword": "brand", "frequency": 2, "relation": "at least"},
        "Brand matters; rebranding a brand is hard.",
        "A brand is a promise.",
    ),
    (
        "keywords:frequency",
        {"keyword": "bombs", "frequency": 2, "relation": "less than"},
        "No bombs.",
        "Bombs and bombs.",
    ),
    (
        "keywords:letter_frequency",
        {"letter": "q", "let_frequency": 2, "let_relation": "at least"},
        "Quick quiz",
        "Quick fox",
    ),
    (
        "keywords:letter_frequency",
        {"letter": "#", "let_frequency": 2, "let_relation": "at least"},
        "#fun #ice",
        "#fun only",
    ),
    (
        "keywords:letter_frequency",
        {"letter": "a", "let_frequency": 2, "let_relation": "less than"},
        "A dog.",
        "A cat.",
    ),
    ("language:response_language", {"language": "de"}, GERMAN, ENGLISH),
    ("language:response_language", {"language": "ru"}, RUSSIAN, GERMAN),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "elm"},
        'Trees.\n\n"Elm, the tree" grows.\n\nEnd.',
        "Trees.\n\nOak grows.\n\nEnd.",
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "elm"},
        "Trees.\n\nElm.\n\nEnd.",
        "Trees.\n\nElm grows.",
    ),  # right word, wrong paragraph count
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "First.\n***\nSecond.\n***",
        "First.\n***\n***\nSecond.",
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "A\n* * *\nB ***C",
        "Only one.",
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "Dr. Smith came. He left.",
        "One. Two. Three.",
    ),  # Punkt knows "Dr." is no sentence end
    (
        "length_constraints:number_sentences",
        {"num_sentences": 2, "relation": "at least"},
        "One. Two?",
        "Just one.",
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "one two three four five",
        "one two, three-four",
    ),
    (
        "length_constraints:number_words",
        {"num_words": 3, "relation": "less than"},
        "it's",
        "one two three",
    ),
    ("punctuation:no_comma", {}, "No commas here.", "Yes, one."),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        'Done. any other questions?"\n',
        "Any other questions? Thanks.",
    ),
    ("startend:quotation", {}, '  "Quoted text."  ', 'Quoted "text".'),
]


def _prompt(instruction_ids, kwargs=None, key=1):
    kwargs = kwargs if kwargs is not None else [{} for _ in instruction_ids]
    return IFEvalPrompt(key, "prompt", list(instruction_ids), kwargs)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(("instruction_id", "kwargs", "follows", "breaks"), CASES)
def test_checker_pass_and_fail(instruction_id, kwargs, follows, breaks):
    prompt = _prompt([instruction_id], [kwargs])
    assert check_response(prompt, follows).follow_strict == [True]
    assert check_response(prompt, breaks).follow_strict == [False]


def test_table_covers_every_checker():
    assert {case[0] for case in CASES} == set(CHECKERS)


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "response"),
    [
        ("punctuation:no_comma", {}, "Sure, here it is:\nNo commas below."),  # first line
        ("startend:end_checker", {"end_phrase": "The end."}, "Story. The end.\nHope it helps!"),
        ("startend:quotation", {}, '**"Bold quote"**'),  # '*' removed
        ("detectable_format:json_format", {}, 'Here you go:\n{"a": 1}\nEnjoy.'),  # both lines
    ],
)
def test_loose_passes_where_strict_fails(instruction_id, kwargs, response):
    result = check_response(_prompt([instruction_id], [kwargs]), response)
    assert (result.follow_strict, result.follow_loose) == ([False], [True])


def test_loose_cannot_rescue_a_violation_on_every_line():
    result = check_response(_prompt(["punctuation:no_comma"]), "a, b\nc, d\ne, f")
    assert (result.follow_strict, result.follow_loose) == ([False], [False])


def test_empty_response_follows_nothing():
    """Forbidden words alone would pass an empty text; IFEval fails blank responses."""
    prompt = _prompt(["keywords:forbidden_words"], [{"forbidden_words": ["x"]}])
    result = check_response(prompt, " \n ")
    assert (result.follow_strict, result.follow_loose) == ([False], [False])


def test_loose_variants_are_the_eight_of_the_paper():
    assert loose_variants("*a*\nb\nc*") == [
        "*a*\nb\nc*",  # as is
        "a\nb\nc",  # '*' removed
        "b\nc*",  # first line removed
        "*a*\nb",  # last line removed
        "b",  # both removed
        "b\nc",
        "a\nb",
        "b",
    ]


def test_metric_arithmetic_on_three_prompts():
    """Three prompts, six instructions; outcomes worked by hand.

    P1 [title, no_comma]            strict T T   loose T T
    P2 [no_comma]                   strict F     loose T   (comma only on the first line)
    P3 [title, quotation, no_comma] strict T F F loose T T F (quote on the middle line, commas
                                    on every line)
    prompt strict = 1/3, loose = 2/3; instruction strict = 3/6, loose = 5/6.
    no_comma: strict 1/3, loose 2/3; title: 2/2, 2/2; quotation: 0/1, 1/1.
    """
    title, no_comma, quotation = (
        "detectable_format:title",
        "punctuation:no_comma",
        "startend:quotation",
    )
    pairs = [
        (_prompt([title, no_comma], key=1), "<<Hi>>\nno commas here"),
        (_prompt([no_comma], key=2), "Sure, here:\nno commas here"),
        (_prompt([title, quotation, no_comma], key=3), 'Here, now:\n"<<T>>, yes"\nok, bye'),
    ]
    results = [check_response(prompt, response) for prompt, response in pairs]
    assert [r.follow_strict for r in results] == [[True, True], [False], [True, False, False]]
    assert [r.follow_loose for r in results] == [[True, True], [True], [True, True, False]]
    scores = score(results)
    assert scores["prompt_level_strict_acc"] == pytest.approx(1 / 3)
    assert scores["inst_level_strict_acc"] == pytest.approx(3 / 6)
    assert scores["prompt_level_loose_acc"] == pytest.approx(2 / 3)
    assert scores["inst_level_loose_acc"] == pytest.approx(5 / 6)
    assert (scores["n"], scores["n_instructions"]) == (3, 6)
    assert scores["per_instruction"] == {
        no_comma: {"n": 3, "strict_acc": pytest.approx(1 / 3), "loose_acc": pytest.approx(2 / 3)},
        quotation: {"n": 1, "strict_acc": 0.0, "loose_acc": 1.0},
        title: {"n": 2, "strict_acc": 1.0, "loose_acc": 1.0},
    }
    assert scores["sentence_splitter"].startswith("punkt english")
    assert scores["ifeval_version"] == IFEVAL_VERSION


def test_score_needs_results():
    with pytest.raises(ValueError, match="at least one"):
        score([])


def test_unknown_instruction_names_id_and_key():
    with pytest.raises(UnknownInstructionError, match=r"sample 77: .*'made:up'"):
        check_response(_prompt(["made:up"], key=77), "text")


def test_wrong_kwargs_name_the_sample():
    prompt = _prompt(["punctuation:no_comma"], [{"num_words": 3}], key=5)
    with pytest.raises(ValueError, match=r"sample 5: instruction 'punctuation:no_comma'"):
        check_response(prompt, "text")


def test_unknown_relation_is_an_error():
    prompt = _prompt(["length_constraints:number_words"], [{"num_words": 1, "relation": "about"}])
    with pytest.raises(ValueError, match="relation must be one of"):
        check_response(prompt, "text")


def test_load_ifeval_reads_rows_and_drops_null_kwargs(tmp_path):
    row = {
        "key": 9,
        "prompt": "Say hi",
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{"num_words": None}],
    }
    prompts = load_ifeval(_write_jsonl(tmp_path / "data.jsonl", [row]))
    assert prompts == [IFEvalPrompt(9, "Say hi", ["punctuation:no_comma"], [{}])]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("{not json", "Expecting property name"),
        (json.dumps({"key": 2, "prompt": "p", "kwargs": []}), "missing field"),
        (
            json.dumps({"key": 2, "prompt": "p", "instruction_id_list": ["a"], "kwargs": []}),
            "1 instruction ids but 0 kwargs",
        ),
    ],
)
def test_load_ifeval_names_file_and_line(tmp_path, bad_row, message):
    good = {"key": 1, "prompt": "p", "instruction_id_list": [], "kwargs": []}
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good) + "\n" + bad_row + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"data\.jsonl:2: .*{message}"):
        load_ifeval(path)


def test_word_tokenizer_splits_like_treebank():
    """Checked against nltk.word_tokenize: clitics and CANNOT split, slashes and hyphens kept."""
    assert text_utils.word_tokenize("I CANNOT go, DON'T ask: A/B WELL-KNOWN") == [
        "I",
        "CAN",
        "NOT",
        "go",
        ",",
        "DO",
        "N'T",
        "ask",
        ":",
        "A/B",
        "WELL-KNOWN",
    ]


def test_regex_fallback_splitter_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "punkt", None)  # makes `import punkt` fail
    text_utils._sentence_splitter.cache_clear()
    try:
        assert text_utils.sentence_splitter_name() == text_utils.REGEX_SENTENCE_SPLITTER
        assert text_utils.split_sentences("Dr. Smith came. He left!  Why?") == [
            "Dr.",
            "Smith came.",
            "He left!",
            "Why?",
        ]
    finally:
        text_utils._sentence_splitter.cache_clear()


def _real_prompt_file() -> Path:
    root = Path(os.environ.get("MMDPO_EVAL_DATA", "/work/shared/evaldata"))
    return root / "ifeval" / "input_data.jsonl"


@pytest.mark.skipif(
    not _real_prompt_file().exists(),
    reason="IFEval prompt file not found; set MMDPO_EVAL_DATA to the evaldata folder",
)
def test_real_prompt_file_has_a_checker_for_every_instruction():
    prompts = load_ifeval(_real_prompt_file())
    used = {instruction_id for p in prompts for instruction_id in p.instruction_id_list}
    assert used - set(CHECKERS) == set()
    # Echoing the prompt runs every row's kwargs through its checker.
    scores = score([check_response(p, p.prompt) for p in prompts])
    assert scores["n"] == len(prompts)
    assert set(scores["per_instruction"]) == used
