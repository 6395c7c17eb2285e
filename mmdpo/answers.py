"""Final-answer extraction and checking, shared by the math pair builder, math evals and scorers.

Extraction: ``extract_boxed`` (last ``\\boxed{}``/``\\fbox{}``), and lm-evaluation-harness's two
GSM8K rules, ``extract_gsm8k_strict`` (``#### 42``) and ``extract_last_number``.

Checking: ``verify_answer(gold, prediction)`` runs math-verify on a bare answer (gold parsed
first, then ``verify(gold, prediction)``, the order its asymmetric rules expect);
``grade_math_response(response, gold)`` lets math-verify read a whole response with its own
extraction config, and falls back to ``extract_boxed`` / ``extract_last_number`` only where
math-verify finds nothing. Both run with a timeout that works in any thread. math-verify's
own timeouts use ``signal.alarm``, which raises off the main thread, so they are switched off
(``parsing_timeout=None``, ``timeout_seconds=None``) and the whole check runs in a worker
process instead (``python -m mmdpo.answers``, one JSON line per check). A check that overruns
``timeout_s`` gets its worker killed and counts as incorrect.

Why processes and not a thread with a join timeout: a Python thread cannot be stopped, so a
sympy simplification that never ends would keep burning a core (and holding the GIL) for the
rest of the run, and each further timeout would add another such thread. A process is killed
for real. The price is ~1 s to start each worker (it imports sympy; workers are reused, at most
``max_workers`` of them) and a pipe round trip per check. The workers are started with
``subprocess`` rather than ``multiprocessing`` so that they never re-import the caller's
``__main__`` and can be started from daemonic processes such as DataLoader workers. Should a
worker fail to start, the check falls back to a daemon thread with a join timeout.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# lm-evaluation-harness, lm_eval/tasks/gsm8k/gsm8k.yaml: "strict-match" and "flexible-extract".
_GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_LAST_NUMBER = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_MATH_DELIMITERS = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")
_BARE_PI = re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])")


# -- extraction ---------------------------------------------------------------------------------


def _braced_content(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start] == "{"`` and the index after it."""
    depth = 0
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2  # an escaped character, e.g. \{ or \}, never opens or closes a group
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : index], index + 1
        index += 1
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last top-level ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces kept).

    ``\\boxed 5`` (no braces) gives the token after the space. None when there is no box or the
    last one is never closed (a truncated response).
    """
    answer: str | None = None
    position = 0
    while True:
        match = _BOX_START.search(text, position)
        if match is None:
            return answer
        rest = match.end()
        while rest < len(text) and text[rest] == " ":
            rest += 1
        if rest < len(text) and text[rest] == "{":
            group = _braced_content(text, rest)
            if group is None:
                return None
            answer, position = group
        elif rest > match.end() and rest < len(text):
            token = re.match(r"[^\s$]+", text[rest:])
            answer = token.group(0) if token else None
            position = rest + (len(answer) if answer else 0)
        else:
            position = match.end()


def extract_gsm8k_strict(text: str) -> str | None:
    """The number after the first ``#### `` (lm-eval's strict-match), unnormalised."""
    match = _GSM8K_STRICT.search(text)
    return match.group(1) if match else None


def extract_last_number(text: str, *, digits_only: bool = False) -> str | None:
    """The last match of lm-eval's flexible-extract regex ``(-?[$0-9.,]{2,})|(-?[0-9]+)``.

    As in lm-eval, a run of ``$.,`` without digits (a trailing "...") also matches; pass
    ``digits_only=True`` to skip such matches and take the last one holding a digit.
    """
    matches = [first or second for first, second in _LAST_NUMBER.findall(text)]
    if digits_only:
        matches = [match for match in matches if any(char.isdigit() for char in match)]
    return matches[-1] if matches else None


def normalize_number(text: str) -> str:
    """Remove commas and ``$`` and one trailing period, as lm-eval's GSM8K exact match does."""
    text = text.strip().replace(",", "").replace("$", "")
    return text[:-1] if text.endswith(".") else text


# -- checking -----------------------------------------------------------------------------------


def _as_parseable(answer: str) -> str:
    """Text that math-verify's LaTeX extraction can parse.

    Text that already has math delimiters (``$``, ``\\(``, ``\\[``, a box) is left alone; a
    bare answer ("\\frac{1}{2}", "3", "(3, pi/2)") is wrapped in ``\\boxed{}`` (the extraction
    that math-verify ranks first) with a bare ``pi`` read as ``\\pi``.
    """
    if _MATH_DELIMITERS.search(answer):
        return answer
    return "\\boxed{" + _BARE_PI.sub(r"\\pi", answer.strip()) + "}"


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeouts are off; here that is deliberate."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def _parse_gold(gold: str) -> list:
    from math_verify import parse

    if "#### " in gold:
        strict = extract_gsm8k_strict(gold)
        gold = normalize_number(strict) if strict is not None else gold
    return parse(_as_parseable(gold), parsing_timeout=None)


def _verify_inline(gold: str, prediction: str) -> bool:
    """math-verify on a bare answer (or text with delimiters), timeouts off; never raises."""
    try:
        from math_verify import parse, verify

        gold_parsed = _parse_gold(gold)
        if not gold_parsed:
            return False
        prediction_parsed = parse(_as_parseable(prediction), parsing_timeout=None)
        if not prediction_parsed:
            return False
        return bool(verify(gold_parsed, prediction_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - a checker must never take a run down
        logger.debug("math-verify failed", exc_info=True)
        return False


def fallback_answer(response: str) -> str | None:
    """The last closed box, else the last number: what is checked when math-verify's own
    extraction finds nothing in a response."""
    answer = extract_boxed(response)
    if answer is None:
        number = extract_last_number(response, digits_only=True)
        answer = normalize_number(number) if number is not None else None
    return answer if answer is not None and answer.strip() else None


def _grade_inline(gold: str, response: str) -> tuple[bool, str | None]:
    """math-verify reads the whole response with its own extraction config (boxes, closed or
    not; "final answer is"; the last LaTeX or plain expression; several boxes are a set).
    Only where it finds nothing does :func:`fallback_answer` supply the answer. Never raises."""
    try:
        from math_verify import parse, verify

        found = parse(response, parsing_timeout=None)
        if found:
            gold_parsed = _parse_gold(gold)
            correct = bool(gold_parsed) and verify(gold_parsed, found, timeout_seconds=None)
            return bool(correct), str(found[-1])
    except Exception:  # noqa: BLE001 - a checker must never take a run down
        logger.debug("math-verify failed", exc_info=True)
        return False, None
    answer = fallback_answer(response)
    if answer is None:
        return False, None
    return _verify_inline(gold, answer), answer


# The checks a worker runs: name -> function of (gold, text) returning a JSON-able result.
_CHECKS = {"verify": _verify_inline, "grade": _grade_inline}


class _Worker:
    """One ``python -m mmdpo.answers`` process answering a JSON line per check."""

    startup_timeout_s = 120.0  # importing sympy on a loaded machine; not part of any check

    def __init__(self) -> None:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mmdpo.answers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        if self._read_line(self.startup_timeout_s) != b"ready":
            self.close()
            raise OSError("math-verify worker did not start")

    def _read_line(self, timeout_s: float) -> bytes:
        """One reply line, or b"" when none is complete within ``timeout_s``."""
        # The raw fd, not the buffered reader, so that select() sees every pending byte.
        deadline = time.monotonic() + timeout_s
        reply = b""
        while not reply.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(left, 0.0))
            chunk = os.read(self.process.stdout.fileno(), 65536) if ready else b""
            if not chunk:  # timed out, or the worker died
                return b""
            reply += chunk
        return reply.strip()

    def run(self, check: str, gold: str, text: str, timeout_s: float) -> Any:
        """The check's result, or None when the worker overran the timeout or died (it is then
        killed)."""
        try:
            self.process.stdin.write((json.dumps([check, gold, text]) + "\n").encode())
            self.process.stdin.flush()
            reply = self._read_line(timeout_s)
        except OSError:
            reply = b""
        if reply:
            return json.loads(reply)
        self.close()
        return None

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


class _WorkerPool:
    """Up to ``max_workers`` reusable workers, shared by all threads of this process."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._idle: list[_Worker] = []
        self._started = 0
        self._changed = threading.Condition()

    def _acquire(self) -> _Worker:
        with self._changed:
            while not self._idle and self._started >= self.max_workers:
                self._changed.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _Worker()
        except Exception:
            self._release(None)
            raise

    def _release(self, worker: _Worker | None) -> None:
        """Give a worker back, or None to free the slot of one that was killed."""
        with self._changed:
            if worker is None:
                self._started -= 1
            else:
                self._idle.append(worker)
            self._changed.notify()

    def run(self, check: str, gold: str, text: str, timeout_s: float) -> Any:
        worker = self._acquire()
        result = worker.run(check, gold, text, timeout_s)
        self._release(worker if result is not None else None)
        return result

    def close(self) -> None:
        """Stop the idle workers (at exit; busy ones would end on their stdin closing anyway)."""
        with self._changed:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for worker in idle:
            worker.close()


_POOL = _WorkerPool(max_workers=max(1, min(4, os.cpu_count() or 1)))
atexit.register(_POOL.close)


def _run_in_thread(check: str, gold: str, text: str, timeout_s: float) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(_CHECKS[check](gold, text)), daemon=True)
    thread.start()
    thread.join(timeout_s)
    return result[0] if result else None


@functools.lru_cache(maxsize=65536)
def _run_cached(check: str, gold: str, text: str, timeout_s: float | None) -> Any:
    """A check's result, or None when it timed out."""
    if timeout_s is None or timeout_s <= 0:
        return _CHECKS[check](gold, text)
    try:
        return _POOL.run(check, gold, text, timeout_s)
    except Exception:  # noqa: BLE001 - e.g. no fork allowed; never fail a check over it
        logger.warning("could not start a math-verify worker; checking in a thread instead")
        return _run_in_thread(check, gold, text, timeout_s)


def verify_answer(gold: str, prediction: str, *, timeout_s: float | None = 5.0) -> bool:
    """Whether ``prediction`` is mathematically equivalent to ``gold`` (math-verify).

    Both may be bare answers ("\\frac12", "x=2", "1,000") or text with ``$...$`` or a box; a
    gold GSM8K solution ("... #### 42") is reduced to its number. Safe to call from any thread.
    A parse failure, an error or a check slower than ``timeout_s`` seconds returns False; it
    never raises. ``timeout_s=None`` checks inline, without any timeout. Results are cached.
    For a whole response, use :func:`grade_math_response`.
    """
    if not isinstance(gold, str) or not isinstance(prediction, str):
        return False
    if not gold.strip() or not prediction.strip():
        return False
    return bool(_run_cached("verify", gold, prediction, timeout_s))


def grade_math_response(
    response: str, gold: str, *, timeout_s: float | None = 5.0
) -> tuple[bool, str | None]:
    """Whether a whole response's final answer equals ``gold``, and the answer it was read as.

    math-verify reads the response with its own extraction config, as its authors intend
    (``verify(parse(gold), parse(response))``): an unclosed ``\\boxed{\\frac{14}{3}`` is
    14/3, "the probability is 1/4." is 1/4, several boxes are read as one set of answers.
    Only a response in which it finds nothing falls back to our extraction (last closed box,
    else last number). Returns (correct, extracted answer or None when nothing was found); a
    check slower than ``timeout_s`` counts as incorrect. Same thread safety as verify_answer.
    """
    if not isinstance(gold, str) or not isinstance(response, str):
        return False, None
    if not gold.strip() or not response.strip():
        return False, None
    result = _run_cached("grade", gold, response, timeout_s)
    if result is None:
        return False, None
    correct, extracted = result
    return bool(correct), extracted


def _serve() -> None:
    """Worker loop: a JSON ``[check, gold, text]`` per stdin line, its JSON result per reply."""
    reply_stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # stray prints must not corrupt the replies
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401 - pay the sympy import before announcing readiness

    reply_stream.write("ready\n")
    for line in sys.stdin:
        try:
            check, gold, text = json.loads(line)
            result = _CHECKS[check](gold, text)
        except Exception:  # noqa: BLE001
            result = [False, None] if '"grade"' in line else False
        reply_stream.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    _serve()
