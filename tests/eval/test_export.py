"""LLM-judge exports: responses written in each upstream tool's own format."""

from __future__ import annotations

import json

from PIL import Image

from eval.export import AlpacaEval, ArenaHard, MMHalBench, MTBench, model_file_name
from eval.results import make_result


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _run(bench, data, responses, model="runs/my-model/"):
    records = [
        bench.score(item, response) for item, response in zip(data.items, responses, strict=True)
    ]
    return make_result(bench, data, records, model=model)


def test_model_file_name():
    assert model_file_name("runs/my-model/") == "my-model"
    assert model_file_name("Qwen/Qwen2.5 0.5B") == "Qwen2.5_0.5B"


def test_alpaca_eval_model_outputs(tmp_path):
    source = tmp_path / "alpaca_eval.json"
    rows = [
        {"instruction": "Say hi.", "output": "ref", "generator": "gpt4", "dataset": "helpful_base"}
    ]
    source.write_text(json.dumps(rows))
    bench = AlpacaEval()
    result = _run(bench, bench.load(source), ["Hi!"])
    result.save(tmp_path / "out")
    outputs = json.loads((tmp_path / "out" / "alpaca_eval" / "model_outputs.json").read_text())
    assert outputs == [
        {
            "instruction": "Say hi.",
            "output": "Hi!",
            "generator": "runs/my-model/",
            "dataset": "helpful_base",
        }
    ]
    assert result.metrics == {"n": 1.0, "mean_response_chars": 3.0}


def test_arena_hard_v01_and_v2_answers(tmp_path):
    v01 = _write_jsonl(
        tmp_path / "question.jsonl",
        [
            {
                "question_id": "abc123",
                "category": "arena-hard-v0.1",
                "cluster": "c",
                "turns": [{"content": "Q?"}],
            }
        ],
    )
    bench = ArenaHard()
    result = _run(bench, bench.load(v01), ["A."])
    assert bench.build_prompt(bench.load(v01).items[0]).messages == [
        {"role": "user", "content": "Q?"}
    ]
    ((name, text),) = result.artifacts.items()
    assert name == "arena_hard/model_answer/my-model.jsonl"
    answer = json.loads(text)
    assert set(answer) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert answer["question_id"] == "abc123" and answer["model_id"] == "runs/my-model/"
    assert answer["choices"] == [{"index": 0, "turns": [{"content": "A."}]}]

    v2 = _write_jsonl(
        tmp_path / "question_v2.jsonl", [{"uid": "u1", "category": "hard_prompt", "prompt": "P?"}]
    )
    answer = json.loads(next(iter(_run(bench, bench.load(v2), ["B."]).artifacts.values())))
    assert set(answer) == {"uid", "ans_id", "model", "messages", "tstamp", "metadata"}
    assert answer["messages"] == [
        {"role": "user", "content": "P?"},
        {"role": "assistant", "content": {"answer": "B."}},
    ]


def test_mt_bench_two_turns(tmp_path):
    source = _write_jsonl(
        tmp_path / "question.jsonl",
        [{"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Now in French."]}],
    )
    bench = MTBench()
    data = bench.load(source)
    item = data.items[0]
    assert bench.num_turns(item) == 2
    second = bench.build_prompt(item, ["Leaves fall."])
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]
    assert (
        second.messages[1]["content"] == "Leaves fall."
        and second.messages[2]["content"] == "Now in French."
    )
    result = _run(bench, data, [["Leaves fall.", "Les feuilles tombent."]], model="m")
    answer = json.loads(result.artifacts["mt_bench/model_answer/m.jsonl"])
    assert answer["question_id"] == 81 and answer["model_id"] == "m"
    assert answer["choices"] == [{"index": 0, "turns": ["Leaves fall.", "Les feuilles tombent."]}]


def test_mmhal_bench_fills_model_answer(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (6, 6)).save(tmp_path / "images" / "10_a.jpg")
    template = [
        {"question_type": "attribute", "question_topic": "animal", "image_id": "10",
         "image_src": "https://example.org/x/10_a.jpg", "image_content": ["Dog"],
         "question": "What colour is the dog?", "gt_answer": "Brown.", "model_answer": ""},
    ]  # fmt: skip
    source = tmp_path / "response_template.json"
    source.write_text(json.dumps(template))
    bench = MMHalBench()
    data = bench.load(source)
    assert bench.build_prompt(data.items[0]).images[0].size == (6, 6)
    result = _run(bench, data, ["It is brown."])
    (filled,) = json.loads(result.artifacts["mmhal_bench/response.json"])
    assert filled == {**template[0], "model_answer": "It is brown."}


def test_generated_fallbacks_are_marked(monkeypatch):
    monkeypatch.delenv("MMDPO_EVAL_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for bench in (AlpacaEval(), ArenaHard(), MTBench(), MMHalBench()):
        data = bench.load(limit=3)
        assert data.generated and len(data.items) == 3, bench.name
        assert bench.build_prompt(data.items[0]).messages[0]["role"] == "user"
    mmhal = MMHalBench().load(limit=2)
    assert len(MMHalBench().build_prompt(mmhal.items[1]).images) == 1
