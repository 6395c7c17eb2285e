"""The offline demo: its data world, its settings, a fast end-to-end smoke run, the full run."""

import json
import re
from collections import Counter

import pytest

from eval.chair import VOCABULARIES, chair_record
from eval.shapes_world import make_scenes, scene_objects_for_chair
from mmdpo.config import ConfigError
from tasks.demo import (
    METRICS,
    Stages,
    engine_configs,
    prepare_out_dir,
    run_demo,
    split_overrides,
    stage_names,
)
from tasks.demo_world import (
    DEMO_COLORS,
    PAIR_SEED,
    describe,
    grounding_examples,
    hallucination_score,
    ordered_objects,
    pope_questions,
    preference_pairs,
    question_kind,
    question_kinds,
    sft_examples,
    similar_absent,
    with_replay,
    write_eval_data,
    yes_by_kind,
)

TINY = [
    "demo.sft_scenes=12",
    "demo.grounding_steps=2",
    "demo.grounding_batch_size=4",
    "demo.grounding_check_every=1",
    "demo.sft_steps=4",
    "demo.sft_batch_size=4",
    "demo.pair_scenes=6",
    "demo.pope_scenes=3",
    "demo.chair_scenes=3",
    "demo.hidden_size=64",
    "train.max_steps=2",
    "train.batch_size=2",
]


def test_descriptions_read_in_order_and_score_by_the_chair_rule():
    scene = make_scenes(40, PAIR_SEED)[0]
    names = ordered_objects(scene)
    assert sorted(names) == sorted(scene.object_names)
    correct = describe(names)
    assert hallucination_score(correct, scene) == 10.0
    absent = next(
        f"{c} {s}"
        for c in ("red", "green", "blue")
        for s in ("circle", "square", "triangle")
        if f"{c} {s}" not in names
    )
    wrong = describe(names + [absent])
    # One of len(names) + 1 mentions is hallucinated: 10 * (1 - 1 / (n + 1)).
    assert hallucination_score(wrong, scene) == pytest.approx(10 * len(names) / (len(names) + 1))
    record = chair_record(wrong, scene_objects_for_chair(scene), VOCABULARIES["shapes"])
    assert record["hallucinated"] == [absent]


def test_demo_world_is_easy_to_see_and_its_pope_rows_are_balanced():
    from tasks.demo_world import make_scenes as demo_scenes

    scenes = demo_scenes(50, 7)
    boxes = {obj.box for scene in scenes for obj in scene.objects}
    assert len(boxes) == 4  # one fixed place and size per quadrant
    assert {obj.color for scene in scenes for obj in scene.objects} <= set(DEMO_COLORS)
    rows = pope_questions(scenes, 7)
    labels = [row["label"] for row in rows]
    assert labels.count("yes") == labels.count("no")
    negatives = Counter()
    for example in grounding_examples(30):  # the first SFT stage: every answer is correct
        name = example.prompt.split("Is there a ")[-1].split(" in the image?")[0]
        if example.answer in ("Yes.", "No."):
            (present,) = example.scene.object_names
            assert (name == present) == (example.answer == "Yes.")
            if name != present:  # a look-alike: the same colour or the same shape, not both
                same = [a == b for a, b in zip(name.split(), present.split(), strict=True)]
                negatives["same colour" if same[0] else "same shape"] += 1
                assert sum(same) == 1
    assert negatives == {"same colour": 30, "same shape": 30}  # one of each per scene


def test_pope_file_names_each_question_kind_and_yes_shares_add_up(tmp_path):
    from eval.pope import POPE
    from tasks.demo_world import EVAL_SEED
    from tasks.demo_world import make_scenes as demo_scenes

    files = write_eval_data(tmp_path, 12, 1)
    rows = [json.loads(line) for line in files["pope"].read_text().splitlines()]
    scenes = {scene.image_id: scene for scene in demo_scenes(12, EVAL_SEED)}
    for row in rows:  # the kind follows the rule, and "present" is exactly the "yes" label
        scene = scenes[int(row["image"].removesuffix(".png"))]
        assert row["text"] == f"Is there a {row['object']} in the image?"
        assert (row["kind"] == "present") == (row["label"] == "yes")
        if row["kind"] == "look_alike":
            assert row["object"] in similar_absent(scene)
        if row["kind"] == "other":
            assert row["object"] not in similar_absent(scene) + list(scene.object_names)
    kinds = question_kinds(files["pope"])
    assert Counter(kinds.values())["look_alike"] > 0 and Counter(kinds.values())["other"] > 0
    assert question_kind(scenes[0], scenes[0].object_names[0]) == "present"
    # A model that says yes to present objects and look-alikes only: the shares say so, and
    # weighted by the question counts they give back POPE's yes-ratio.
    bench = POPE()
    data = bench.load(files["pope"])
    answers = {"present": "Yes.", "look_alike": "Yes.", "other": "No."}
    records = [bench.score(item, answers[kinds[item["id"]]]) for item in data.items]
    shares = yes_by_kind(records, kinds)
    assert shares == {"yes_present": 1.0, "yes_look_alike": 1.0, "yes_other": 0.0}
    counts = Counter(kinds.values())
    weighted = sum(shares[f"yes_{kind}"] * count for kind, count in counts.items()) / len(records)
    assert weighted == pytest.approx(bench.aggregate(records)["yes_ratio"])


def test_patch_embedding_init_reads_mean_colour():
    import torch

    from tasks.demo_model import init_patch_embedding

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.visual = torch.nn.Module()
            self.model.visual.patch_embed = torch.nn.Module()
            self.model.visual.patch_embed.proj = torch.nn.Conv3d(
                3, 32, kernel_size=(2, 14, 14), stride=(2, 14, 14), bias=False
            )

    holder = Holder()
    init_patch_embedding(holder)
    patch = torch.zeros(1, 3, 2, 14, 14)
    patch[:, 0] = -1.0  # the red channel, everywhere
    patch[:, 1, :, :7, :7] = -2.0  # the green channel, top-left corner only
    out = holder.model.visual.patch_embed.proj(patch).flatten()
    assert out[0].item() == pytest.approx(-1.0) and out[1].item() == pytest.approx(-0.5)
    assert out[3 + 1].item() == pytest.approx(-2.0)  # corner 0, green
    assert out[15:].abs().max().item() == 0.0


def test_warmup_with_a_check_stops_at_the_first_check_passed(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tasks.demo_model import Encoder, ModelSize, build_demo_vlm, supervised_warmup

    build_demo_vlm(tmp_path, ModelSize(hidden_size=64, intermediate_size=128))
    model = AutoModelForImageTextToText.from_pretrained(tmp_path)
    encoder = Encoder(AutoProcessor.from_pretrained(tmp_path))
    checked = []

    def passes(step):
        checked.append((step, model.training))
        return step == 4

    losses = supervised_warmup(
        model,
        encoder,
        grounding_examples(4),
        steps=10,
        batch_size=2,
        learning_rate=1e-3,
        seed=0,
        log=lambda line: None,
        stop_check=passes,
        check_every=2,
    )
    assert len(losses) == 4 and [step for step, _ in checked] == [2, 4]
    assert not model.training  # left in eval mode, as without a check


def test_pairs_are_scored_by_rule_and_flipped_pairs_show_it_in_their_scores():
    pairs = preference_pairs(60, score_noise=0.0, flip_rate=0.3, low_margin_rate=0.3)
    assert pairs == preference_pairs(60, score_noise=0.0, flip_rate=0.3, low_margin_rate=0.3)
    kinds = {p.meta["kind"] for p in pairs}
    assert {"description", "yes_no", "description_flipped", "yes_no_flipped"} <= kinds
    for pair in pairs:
        assert pair.images and pair.modality == "vision" and pair.chosen != pair.rejected
        if pair.meta["kind"].endswith("flipped"):
            assert pair.score_chosen < pair.score_rejected
        else:
            assert pair.score_chosen > pair.score_rejected
        if pair.meta["kind"] == "yes_no":
            assert (pair.score_chosen, pair.score_rejected) == (10.0, 0.0)
    margins = [p.score_margin for p in pairs if p.meta["kind"] == "description"]
    assert min(margins) < 2.0 < max(margins)  # low-margin pairs next to clean ones


def test_sft_data_carries_the_configured_noise():
    examples = sft_examples(400, extra_object_rate=0.4, false_yes_rate=0.5)
    descriptions = [e for e in examples if e.prompt.startswith("Please describe")]
    extra = [
        e
        for e in descriptions
        if chair_record(e.answer, scene_objects_for_chair(e.scene), VOCABULARIES["shapes"])[
            "hallucinated"
        ]
    ]
    assert 0.3 < len(extra) / len(descriptions) < 0.5
    fooled, similar_asked = 0, 0
    for e in examples:
        if e in descriptions:
            continue
        name = e.prompt.split("Is there a ")[1].split(" in the image?")[0]
        if name in e.scene.object_names:
            assert e.answer == "Yes."
        elif name in similar_absent(e.scene):
            similar_asked += 1
            fooled += e.answer == "Yes."
        else:
            assert e.answer == "No."
    assert 0.4 < fooled / similar_asked < 0.6  # false_yes_rate 0.5, on similar objects only
    assert sft_examples(300, extra_object_rate=0.0, false_yes_rate=0.0) != examples


def test_replay_adds_clean_examples_and_leaves_the_noisy_ones_as_they_are():
    noisy = sft_examples(60)
    clean = grounding_examples(20)  # 100 examples
    mixed = with_replay(noisy, clean, 0.5)
    noisy_ids, clean_ids = {id(e) for e in noisy}, {id(e) for e in clean}
    assert Counter(id(e) for e in mixed if id(e) in noisy_ids) == Counter(noisy_ids)
    replayed = [id(e) for e in mixed if id(e) not in noisy_ids]
    assert len(replayed) == 50 and set(replayed) <= clean_ids  # half of them,
    assert len(set(replayed)) == 50  # each once
    assert len(with_replay(noisy, clean, 1.0)) == len(noisy) + len(clean)
    assert with_replay(noisy, clean, 0.5) == mixed  # seeded


def test_overrides_split_between_demo_and_engine(tmp_path):
    settings, engine = split_overrides(["demo.sft_steps=7", "train.learning_rate=5e-4"])
    assert settings.sft_steps == 7 and engine == ["train.learning_rate=5e-4"]
    with pytest.raises(ConfigError, match="demo.nope: unknown key"):
        split_overrides(["demo.nope=1"])
    with pytest.raises(ConfigError, match="demo.sft_steps: expected int"):
        split_overrides(["demo.sft_steps=many"])
    configs = engine_configs(tmp_path, tmp_path / "sft", engine, 0, "dpo")
    uni, dpo = configs["uni_dpo"], configs["dpo"]
    assert uni.model.quantization == "4bit" and uni.lora.enabled
    assert uni.reference.mode == "adapter_off" and uni.train.learning_rate == 5e-4
    assert dpo.loss.name == "dpo" and dpo.loss.kwargs == {"beta": uni.loss.kwargs["beta"]}
    assert dpo.loss.length_normalized is True and dpo.train.seed == uni.train.seed
    with pytest.raises(ConfigError, match="--compare"):
        engine_configs(tmp_path, tmp_path / "sft", [], 0, "nosuchloss")


def test_out_dir_that_the_demo_did_not_make_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not made by `mmdpo demo`"):
        prepare_out_dir(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_rerun_clears_only_what_the_demo_wrote(tmp_path):
    prepare_out_dir(tmp_path)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "old.json").write_text("{}")
    (tmp_path / "demo_results.json").write_text("{}")
    (tmp_path / "my_notes.txt").write_text("keep")
    prepare_out_dir(tmp_path)
    assert not (tmp_path / "eval").exists() and not (tmp_path / "demo_results.json").exists()
    assert (tmp_path / "my_notes.txt").read_text() == "keep"


def _check_run_folder(out, columns):
    summary = json.loads((out / "demo_results.json").read_text())
    assert list(summary["results"]) == columns
    for name in columns:
        metrics = summary["results"][name]
        assert 0.0 <= metrics["pope/accuracy"] <= 1.0
        assert 0.0 <= metrics["pope/yes_ratio"] <= 1.0
        assert all(0.0 <= metrics[f"pope/yes_{k}"] <= 1.0 for k in ("present", "other"))
        assert "chair/chair_s" in metrics
        assert (out / "eval" / name / "pope.samples.jsonl").is_file()
        assert (out / "eval" / name / "chair.json").is_file()
    for name in columns[1:]:
        assert (out / "train" / name / "plots" / "loss.png").is_file()
        assert summary["configs"][name]["model"]["quantization"] == "4bit"
    assert (out / "plots" / "demo_evals.png").stat().st_size > 0
    assert (out / "sft" / "model.safetensors").is_file()
    assert summary["timings_s"]["total"] > 0 and summary["timings_s"]["cpu_total"] > 0
    machine = summary["machine"]  # what made the numbers
    assert machine["torch"] and machine["bitsandbytes"] and machine["cores"] >= 1
    assert isinstance(machine["avx512_bf16"], bool) and machine["torch_threads"] == 1
    assert set(summary["load_average"]) == {"start", "end"}
    return summary


def _stage_numbers(printed: str) -> list[tuple[int, int]]:
    return [
        tuple(int(n) for n in line[1 : line.index("]")].split("/"))
        for line in printed.splitlines()
        if re.match(r"\[\d+/\d+\] ", line)
    ]


def test_demo_smoke_run_writes_the_run_folder(tmp_path, capfd):
    out = tmp_path / "demo"
    assert run_demo(out, TINY, compare="dpo") == 0
    summary = _check_run_folder(out, ["sft", "uni_dpo", "dpo"])
    assert summary["train"]["uni_dpo"]["steps"] == 2
    grounding = summary["grounding"]  # 2 steps, checked after each; tiny models do not pass
    assert grounding["steps"] == 2 and 0.0 <= grounding["check_accuracy"] <= 1.0
    printed, errors = capfd.readouterr()
    assert "POPE accuracy" in printed and "Uni-DPO" in printed and "total time" in printed
    # Six stages, each numbered once and in order: grounding, noisy SFT, pairs, Uni-DPO, DPO,
    # eval (two SFT stages once both printed [1/4]).
    assert _stage_numbers(printed) == [(i, 6) for i in range(1, 7)]
    assert "SFT stage 1" in printed and "SFT stage 2" in printed and "machine: " in printed
    # Clean output: nothing from libraries (warnings, progress bars), no traceback.
    assert errors == "" and "Traceback" not in printed and "Warning" not in printed


def test_stage_numbers_follow_the_plan():
    settings, _ = split_overrides(["demo.grounding_steps=0"])
    assert stage_names(settings, ["uni_dpo"]) == ["sft", "pairs", "align_uni_dpo", "eval"]
    stages = Stages(["sft", "pairs"])
    with pytest.raises(RuntimeError, match="expected 'sft'"):
        stages.start("pairs", "out of order")


@pytest.mark.slow
def test_full_demo_within_ten_minutes(tmp_path):
    out = tmp_path / "demo"
    assert run_demo(out, compare="dpo") == 0
    summary = _check_run_folder(out, ["sft", "uni_dpo", "dpo"])
    assert summary["timings_s"]["total"] < 600
    # The SFT model perceives: it passed the grounding check and does not answer "Yes." to
    # (nearly) every question, as seeds 1 and 3 did before the check (docs/demo.md).
    assert summary["grounding"]["check_accuracy"] >= 0.95
    assert summary["results"]["sft"]["pope/yes_ratio"] < 0.9


def test_seed_lists_and_their_spread():
    from tasks.demo_seeds import format_spread, parse_seeds, seed_summary, seeds_markdown

    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("1,3,5") == [1, 3, 5]
    assert parse_seeds("0-1,7") == [0, 1, 7]
    for bad in ("3-1", "a", "1,1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)

    def run(accuracy, seconds):
        metrics = {f"{b}/{m}": 0.5 for b, m, _, _ in METRICS} | {"pope/accuracy": accuracy}
        return {
            "results": {"sft": metrics, "uni_dpo": metrics},
            "timings_s": {"total": seconds, "cpu_total": seconds / 2},
        }

    summary = seed_summary({0: run(0.6, 100), 1: run(0.8, 140), 2: run(0.7, 120)})
    accuracy = summary["spread"]["uni_dpo"]["pope/accuracy"]
    # mean 0.7; sample std sqrt((0.01 + 0.01 + 0) / 2) = 0.1; min 0.6, max 0.8
    assert accuracy == pytest.approx({"mean": 0.7, "std": 0.1, "min": 0.6, "max": 0.8})
    assert summary["wall_s"]["mean"] == pytest.approx(120) and summary["cpu_s"]["max"] == 70
    printed = format_spread(summary)
    assert "over 3 seeds (0-2)" in printed and "0.700 ± 0.100 [0.600–0.800]" in printed
    assert "| 2 | 0.700 | 0.700 |" in seeds_markdown(summary)


def test_seeds_and_demo_seed_are_not_both_given(tmp_path):
    from tasks.demo_seeds import run_demo_seeds

    with pytest.raises(ConfigError, match="--seeds and demo.seed"):
        run_demo_seeds(tmp_path, [0, 1], ["demo.seed=3"])
