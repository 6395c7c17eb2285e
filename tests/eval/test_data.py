"""Data precedence (--data, $MMDPO_EVAL_DATA, hub, generated), readers, results, registry."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from eval.base import EvalData
from eval.data import (
    HubSource,
    find_rows,
    hub_online,
    iter_jsonl,
    load_hub_rows,
    read_rows,
    resolve_data,
    sha256_file,
    sha256_rows,
)
from eval.gsm8k import GSM8K
from eval.registry import BENCHMARKS, get_benchmark
from eval.results import EvalResult, format_table, make_result


@pytest.fixture
def evaldata(tmp_path):
    """A folder laid out like $MMDPO_EVAL_DATA with one GSM8K file."""
    (tmp_path / "env" / "gsm8k").mkdir(parents=True)
    path = tmp_path / "env" / "gsm8k" / "test.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n")
    return tmp_path / "env"


def test_data_path_wins_over_the_environment(tmp_path, evaldata, monkeypatch):
    monkeypatch.setenv("MMDPO_EVAL_DATA", str(evaldata))
    mine = tmp_path / "mine.jsonl"
    mine.write_text("{}\n")
    assert resolve_data("gsm8k", "gsm8k/test.jsonl", mine) == mine
    assert resolve_data("gsm8k", "gsm8k/test.jsonl", None) == evaldata / "gsm8k" / "test.jsonl"
    # A folder as --data: looked up as folder/relative_file, then folder/<base name>.
    assert resolve_data("gsm8k", "gsm8k/test.jsonl", evaldata) == evaldata / "gsm8k" / "test.jsonl"
    assert resolve_data("gsm8k", "gsm8k/test.jsonl", evaldata / "gsm8k").name == "test.jsonl"


def test_missing_data_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="gsm8k: --data .*nope.jsonl does not exist"):
        resolve_data("gsm8k", "gsm8k/test.jsonl", tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="is a folder without gsm8k/test.jsonl"):
        resolve_data("gsm8k", "gsm8k/test.jsonl", tmp_path)


def test_environment_without_the_file_falls_through(tmp_path, monkeypatch):
    monkeypatch.setenv("MMDPO_EVAL_DATA", str(tmp_path))
    assert resolve_data("gsm8k", "gsm8k/test.jsonl") is None
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert not hub_online()
    found, why = find_rows(
        "gsm8k", "gsm8k/test.jsonl", hub=HubSource("openai/gsm8k", "main", "test")
    )
    assert found is None and "hub unavailable: offline" in why
    with pytest.raises(RuntimeError, match="offline"):
        load_hub_rows(HubSource("openai/gsm8k", "main", "test"))


def test_environment_data_is_used_and_recorded(evaldata, monkeypatch):
    monkeypatch.setenv("MMDPO_EVAL_DATA", str(evaldata))
    data = GSM8K().load()
    path = evaldata / "gsm8k" / "test.jsonl"
    assert not data.generated and data.source == str(path)
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)


def test_sha256_rows_is_canonical():
    assert sha256_rows([{"a": 1, "b": 2}]) == sha256_rows([{"b": 2, "a": 1}])
    assert sha256_rows([{"a": 1}]) != sha256_rows([{"a": 2}])


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    rows = iter_jsonl(path)
    assert next(rows) == (1, {"a": 1})
    with pytest.raises(ValueError, match=rf"{path}:3: expected a JSON object"):
        next(rows)
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=rf"{path}:2: invalid JSON"):
        read_rows(path)


def test_read_rows_json_list_and_json_lines_under_a_json_name(tmp_path):
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    as_lines = tmp_path / "lines.json"
    as_lines.write_text('{"a": 1}\n{"a": 2}\n')
    assert read_rows(as_list) == read_rows(as_lines) == [{"a": 1}, {"a": 2}]
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="expected a JSON list of objects"):
        read_rows(bad)


def test_result_saves_metadata_records_and_table(tmp_path):
    bench = GSM8K()
    item = {"id": "0", "question": "q", "answer": "#### 5"}
    data = EvalData([item], "some/file.jsonl", "abc", generated=False)
    result = make_result(
        bench,
        data,
        [bench.score(item, "#### 5")],
        model="base",
        adapter="runs/a",
        generation={"max_new_tokens": 512, "do_sample": False},
    )
    path = result.save(tmp_path / "out")
    summary = json.loads(path.read_text())
    for key in ("benchmark", "version", "source", "sha256", "n", "model", "adapter", "generation",
                "created", "generated", "metrics"):  # fmt: skip
        assert key in summary, key
    assert summary["metrics"] == {"exact_match_strict": 1.0, "exact_match_flexible": 1.0}
    assert (summary["adapter"], summary["generated"], summary["n"]) == ("runs/a", False, 1)
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "gsm8k.samples.jsonl").open()]
    assert {"id", "prompt", "response", "extracted", "score"} <= set(record)
    table = format_table([result])
    assert "gsm8k      exact_match_strict    1.0000  1  some/file.jsonl" in table
    assert "GENERATED" not in table


def test_nan_metrics_are_null_in_json(tmp_path):
    result = EvalResult("x", "1", "generate", {"accuracy": math.nan}, [], "s", "h", True, 0)
    assert json.loads(result.save(tmp_path).read_text())["metrics"] == {"accuracy": None}
    assert "nan" in format_table([result])


def test_registry_lists_valid_names_on_error():
    assert get_benchmark("gsm8k") is BENCHMARKS["gsm8k"]
    with pytest.raises(KeyError, match="unknown benchmark 'gsm9k'; valid names: .*gsm8k"):
        get_benchmark("gsm9k")
    for name, bench in BENCHMARKS.items():
        assert bench.name == name and bench.kind in ("generate", "loglikelihood", "export")
