"""Reading rows: JSONL, JSON arrays, Parquet, gzip, in-memory lists, Hub names."""

from __future__ import annotations

import gzip
import json
import sys
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_adapters import DataError, RowError, load_samples, read_rows
from tests.data_adapters.conftest import write_jsonl

ROWS = [
    {"prompt": "a?", "chosen": "yes", "rejected": "no"},
    {"prompt": "b?", "chosen": "up", "rejected": "down"},
]


def test_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    assert list(read_rows(path)) == [(1, ROWS[0]), (3, ROWS[1])]


def test_json_array_rows_carry_the_line_where_they_start(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS, indent=2))
    rows = list(read_rows(path))
    assert [row for _, row in rows] == ROWS
    assert [line for line, _ in rows] == [2, 7]  # '[' on line 1, each object 5 lines long


def test_json_file_with_one_object(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS[0], indent=2))
    assert list(read_rows(path)) == [(1, ROWS[0])]


def test_json_file_holding_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "d.json", ROWS)
    assert [row for _, row in read_rows(path)] == ROWS


def test_gzip_jsonl_and_json(tmp_path):
    jsonl = tmp_path / "d.jsonl.gz"
    with gzip.open(jsonl, "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in ROWS))
    array = tmp_path / "d.json.gz"
    with gzip.open(array, "wt") as handle:
        json.dump(ROWS, handle)
    assert [row for _, row in read_rows(jsonl)] == ROWS
    assert [row for _, row in read_rows(array)] == ROWS
    samples = load_samples(jsonl, "trl").samples
    assert [s.id for s in samples] == ["d:1", "d:2"]  # the stem drops .jsonl.gz


def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert list(read_rows(path)) == [(1, ROWS[0]), (2, ROWS[1])]
    assert len(load_samples(path, "trl").samples) == 2


def test_parquet_image_struct_bytes_are_kept_not_decoded(tmp_path, png):
    raw = png.read_bytes()
    row = dict(ROWS[0], images=[{"bytes": raw, "path": "cat.png"}])
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([row]), path)
    sample = load_samples(path, "trl", check_images="full").samples[0]
    assert sample.images == [raw]
    assert sample.modality == "vision"


def test_in_memory_list(tmp_path):
    result = load_samples(ROWS, "trl")
    assert [s.id for s in result.samples] == ["memory:1", "memory:2"]
    assert result.samples[0].meta == {"file": "<memory>", "line": 1}


def test_malformed_json_line_is_a_row_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{bad json\n[1, 2]\n")
    rows = list(read_rows(path))
    assert rows[0] == (1, ROWS[0])
    line, error = rows[1]
    assert line == 2 and isinstance(error, RowError) and error.field == "json"
    assert error.message.startswith("malformed JSON: Expecting property name")
    assert rows[2] == (3, RowError("row", "expected an object, got list"))


def test_malformed_json_array_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"prompt": "a", "chosen": "b", "rejected": "c"},\n  {"prompt": oops}\n]')
    rows = list(read_rows(path))
    assert rows[0][0] == 2
    assert rows[1][0] == 3 and rows[1][1].field == "json"
    assert rows[1][1].message.startswith("malformed JSON: Expecting value")


def test_missing_file_folder_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        list(read_rows(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="is a folder"):
        list(read_rows(tmp_path))
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        list(read_rows(csv))


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="d.jsonl: no rows"):
        load_samples(path, "trl")


def test_hub_name_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    fake = types.ModuleType("datasets")

    def load_dataset(name, split):
        raise ConnectionError("offline and not cached")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DataError) as error:
        load_samples("someone/prefs:test", "trl")
    message = str(error.value)
    assert "someone/prefs:test: cannot load Hub dataset 'someone/prefs' split 'test'" in message
    assert "offline mode is on" in message


def test_hub_name_without_datasets_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match="needs the `datasets` package"):
        list(read_rows("someone/prefs"))


def test_hub_rows_are_read_as_arrow_without_decoding_images(monkeypatch, png):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict(
        {"prompt": ["p"], "chosen": ["c"], "rejected": ["r"], "image": [str(png)]}
    ).cast_column("image", datasets.Image())
    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        return table

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    sample = load_samples("hf://someone/prefs", "trl").samples[0]
    assert calls == [("someone/prefs", "train")]
    assert sample.images == [str(png)]  # a path, not a decoded PIL image
    assert sample.id == "prefs:1"
