"""Answer extraction (boxed, GSM8K strict and flexible) and math-verify checking in any thread."""

import threading
import time

import pytest

from mmdpo.answers import (
    extract_boxed,
    extract_gsm8k_strict,
    extract_last_number,
    grade_math_response,
    normalize_number,
    verify_answer,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{5}.", "5"),
        (r"first \boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\fbox{x^{2}}", "x^{2}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
        (r"$\boxed 7$", "7"),
        (r"\boxed{\boxed{9}}", r"\boxed{9}"),  # the outer box is the top-level one
        (r"\boxed{}", ""),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text", ["no box here", r"\boxed{3} then \boxed{4", r"\boxedx{3}"])
def test_extract_boxed_none(text):
    """No box, a last box never closed (a truncated response), or a longer command name."""
    assert extract_boxed(text) is None


def test_gsm8k_strict_takes_number_after_hashes():
    assert extract_gsm8k_strict("He has 3 + 4 = 7 apples.\n#### 7") == "7"
    assert extract_gsm8k_strict("#### -1,234.5") == "-1,234.5"
    assert extract_gsm8k_strict("The answer is 7.") is None


def test_last_number_follows_lm_eval_flexible_extract():
    """lm-eval takes the last match; a bare "..." matches its first alternative too."""
    assert extract_last_number("3 apples and 12 pears, total $1,500.") == "$1,500."
    assert extract_last_number("x = -4") == "-4"
    assert extract_last_number("it is 42. Hmm...") == "..."
    assert extract_last_number("it is 42. Hmm...", digits_only=True) == "42."
    assert extract_last_number("no numbers") is None


def test_normalize_number():
    assert normalize_number("$1,500.") == "1500"
    assert normalize_number(" -3.25 ") == "-3.25"
    assert normalize_number("1,000,000") == "1000000"


@pytest.mark.parametrize(
    ("gold", "prediction"),
    [
        (r"\frac12", "0.5"),
        (r"\frac{1}{2}", r"\dfrac{1}{2}"),
        (r"\left( 3, \frac{\pi}{2} \right)", "(3, pi/2)"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{2})"),
        (r"10\%", "10"),
        ("2", "x=2"),
        ("x=2", "2"),
        (r"[1, 3)", "[1,3)"),
        (r"\{1, 2\}", r"\{2, 1\}"),
        ("1,000", "1000"),
        ("1000", r"\$1,000"),
        ("-7", "-7"),
        (r"\sqrt{2}", "2^{1/2}"),
        ("3", r"The answer is $\boxed{3}$."),
        ("Natalia sold 48 clips in April ... #### 72", "72"),
    ],
)
def test_verify_answer_equivalences(gold, prediction):
    assert verify_answer(gold, prediction)


@pytest.mark.parametrize(
    ("gold", "prediction"),
    [
        ("-7", "7"),
        ("3", "4"),
        (r"(1, 3]", "[1, 3)"),
        (r"\frac{1}{2}", "0.51"),
        ("5", ""),
        ("", "5"),
    ],
)
def test_verify_answer_rejects(gold, prediction):
    assert not verify_answer(gold, prediction)


def test_verify_answer_never_raises_on_garbage():
    assert verify_answer(r"\frac{", r"}}}\left(") is False
    assert verify_answer(None, "3") is False  # type: ignore[arg-type]


def test_verify_answer_inline_without_timeout():
    assert verify_answer(r"\frac12", "0.5", timeout_s=None)


def test_verify_answer_off_the_main_thread():
    """math-verify's own signal timeouts would raise here; ours must not."""
    results: dict[str, bool] = {}

    def check(name, gold, prediction):
        results[name] = verify_answer(gold, prediction, timeout_s=30.0)

    threads = [
        threading.Thread(target=check, args=("half", r"\frac12", "0.5")),
        threading.Thread(target=check, args=("interval", "[1, 3)", "[1,3)")),
        threading.Thread(target=check, args=("wrong", "-7", "7")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"half": True, "interval": True, "wrong": False}


def test_verify_answer_times_out_off_the_main_thread():
    """sympy never finishes 9^(9^(9^9)); the worker is killed and the check returns False."""
    outcome: list[tuple[bool, float]] = []

    def check():
        start = time.monotonic()
        outcome.append(
            (verify_answer("9^{9^{9^{9}}}", "1", timeout_s=1.0), time.monotonic() - start)
        )

    thread = threading.Thread(target=check)
    thread.start()
    thread.join(timeout=60)
    assert outcome, "verify_answer did not return"
    correct, elapsed = outcome[0]
    assert correct is False
    assert elapsed < 30
    # The pool recovers: the next check gets a fresh worker.
    assert verify_answer("4", "4.0", timeout_s=30.0)


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        (r"Adding up, the result is \boxed{\frac{3}{4}}.", "0.75", (True, r"\frac{3}{4}")),
        ("She pays 3 * 4 = 12 dollars, so $1,200.", "1200", (True, "1200")),
        ("The total is 41.", "42", (False, "41")),
        ("I cannot solve this.", "42", (False, None)),
        ("", "42", (False, None)),
    ],
)
def test_grade_math_response(response, gold, expected):
    assert grade_math_response(response, gold) == expected


# Responses that our own extraction (last closed box, else last number) used to misread,
# each with the answer math-verify reads and the verdict that follows.
FALSE_NEGATIVES = [  # right answers that were scored wrong
    # an unclosed box (cut off, or a stray brace): the last number was "3"
    (r"The sum is $\frac{8}{3} + 2$, so the answer is \boxed{\frac{14}{3}", r"\frac{14}{3}"),
    # a fraction in words: the last number was "4"
    ("Two of the eight outcomes are good, so the probability is 1/4.", r"\frac{1}{4}"),
    # "final answer is $...$" without a box: the last number was "4"
    (r"The final answer is $\frac{3}{4}$. I hope it is correct.", "0.75"),
]
FALSE_POSITIVES = [  # wrong answers that were scored right
    (r"The sum is $\frac{8}{3} + 2$, so the answer is \boxed{\frac{14}{3}", "3"),
    ("Two of the eight outcomes are good, so the probability is 1/4.", "4"),
    (r"The final answer is $\frac{3}{4}$. I hope it is correct.", "4"),
    # two boxes are a set of answers to math-verify, equal to neither one alone
    (r"I think \boxed{2} ... no, \boxed{3}", "3"),
]


def _math_verify_itself(response, gold):
    from math_verify import parse, verify

    return bool(
        verify(
            parse("\\boxed{" + gold + "}", parsing_timeout=None),
            parse(response, parsing_timeout=None),
            timeout_seconds=None,
        )
    )


@pytest.mark.parametrize(("response", "gold"), FALSE_NEGATIVES)
def test_math_verify_reads_the_response_right_answers(response, gold):
    assert _math_verify_itself(response, gold)
    assert grade_math_response(response, gold)[0] is True


@pytest.mark.parametrize(("response", "gold"), FALSE_POSITIVES)
def test_math_verify_reads_the_response_wrong_answers(response, gold):
    assert not _math_verify_itself(response, gold)
    assert grade_math_response(response, gold)[0] is False


def test_what_math_verify_extracted_is_reported():
    assert grade_math_response(r"so \boxed{\frac{14}{3}", "3") == (False, r"{\frac{14}{3}")
    assert grade_math_response("the probability is 1/4.", "4") == (False, "1/4.")
    assert grade_math_response(r"\boxed{2} or \boxed{3}", "3") == (False, "2,3")


def test_fallback_only_where_math_verify_finds_nothing():
    """math-verify finds no answer in "It costs $$5." (an unclosed display-math delimiter);
    the last number, 5, is checked instead. Where it finds one, the fallback is never used."""
    from math_verify import parse

    from mmdpo.answers import fallback_answer

    assert parse("It costs $$5.", parsing_timeout=None) == []
    assert grade_math_response("It costs $$5.", "5") == (True, "5")
    assert grade_math_response("It costs $$5.", "6") == (False, "5")
    # our fallback would read "3" here (the last number); math-verify reads 14/3
    response = r"so the answer is \boxed{\frac{14}{3}"
    assert fallback_answer(response) == "3" and grade_math_response(response, "3")[0] is False


def test_grading_inline_and_in_a_worker_agree():
    cases = FALSE_NEGATIVES[:2] + FALSE_POSITIVES[:2] + [("It costs $$5.", "5")]
    for response, gold in cases:
        assert grade_math_response(response, gold, timeout_s=None) == grade_math_response(
            response, gold, timeout_s=30.0
        )
