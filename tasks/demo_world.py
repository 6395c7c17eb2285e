"""The demo's data, all generated from an easy version of the shapes world (4 colours x 3
shapes, each object a large flat shape at a fixed place in its quadrant): SFT examples, scored
preference pairs, and the POPE / CHAIR evaluation files.

Disjoint seeds give disjoint sets of scenes: the SFT grounding stage, its check, the SFT
warm-up, the preference pairs, the evaluation. Everything is seeded; the same settings give
the same data byte for byte.

The grounding stage is clean; its examples are replayed beside the noisy ones in the second
stage (:func:`with_replay`). The main SFT data is deliberately imperfect in two ways that real
captioning data is:

- some descriptions name an object that is not in the image (``extra_object_rate``), taken
  from the objects that look like the ones present (the same colour or the same shape),
  as co-occurrence errors in human captions are;
- yes/no questions are balanced, but questions about an absent object that looks like a
  present one are answered "Yes." at ``false_yes_rate``: the affirmative bias of
  instruction data on confusable objects.

The preference pairs are scored by rule, ``10 × (1 − hallucinated mentions / mentions)`` for a
description and 10 or 0 for a yes/no answer, plus Gaussian noise. Like real preference data
they vary in quality: most are clean, some have a small score margin (both responses flawed),
and some are mislabelled (the worse response marked chosen; its score says so).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from eval import shapes_world
from eval.chair import PROMPT as DESCRIBE_PROMPT
from eval.chair import VOCABULARIES, chair_record
from eval.pope import ANSWER_HINT
from eval.shapes_world import (
    IMAGE_SIZE,
    SHAPES,
    Scene,
    ShapeObject,
    scene_objects_for_chair,
)
from mmdpo.types import PreferenceSample

SFT_SEED = 1001
GROUNDING_CHECK_SEED = SFT_SEED + 2
REPLAY_SEED = SFT_SEED + 3
PAIR_SEED = 2002
EVAL_SEED = 3003
SOURCE = "shapes-world-demo"

# The demo's world is the shapes world made easy to see: four colours, three shapes, every
# object a large flat shape filling its quadrant at a fixed place and size, so that what the
# model sees of an object depends only on what the object is.
DEMO_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
DEMO_KINDS: tuple[str, ...] = tuple(f"{c} {s}" for c in DEMO_COLORS for s in SHAPES)
MARGIN = 12  # pixels between an object and the edges of its quadrant (224 px scene)


def make_scenes(n: int, seed: int, max_objects: int = 3) -> list[Scene]:
    """``n`` scenes (ids 0..n-1) of 1..``max_objects`` distinct objects, one per quadrant."""
    rng = random.Random(seed)
    cell = IMAGE_SIZE // 2
    scenes = []
    for image_id in range(n):
        count = rng.randint(1, max_objects)
        kinds = rng.sample(DEMO_KINDS, count)
        quadrants = rng.sample(range(4), count)
        objects = []
        for kind, quadrant in zip(kinds, quadrants, strict=True):
            color, shape = kind.split()
            left, top = (quadrant % 2) * cell + MARGIN, (quadrant // 2) * cell + MARGIN
            box = (left, top, left + cell - 2 * MARGIN, top + cell - 2 * MARGIN)
            objects.append(ShapeObject(color, shape, box))
        scenes.append(Scene(image_id, tuple(objects)))
    return scenes


def similar_absent(scene: Scene) -> list[str]:
    """Absent objects that share a colour or a shape with a present one, sorted."""
    present = set(scene.object_names)
    return sorted(
        kind
        for kind in DEMO_KINDS
        if kind not in present
        and any(kind.split()[0] == o.color or kind.split()[1] == o.shape for o in scene.objects)
    )


def absent_objects(scene: Scene, count: int, rng: random.Random) -> list[str]:
    """Objects not in the scene: half (rounded up) similar to a present one (POPE's
    "adversarial" negatives), the rest any other absent object."""
    similar = similar_absent(scene)
    others = [k for k in DEMO_KINDS if k not in scene.object_names and k not in similar]
    rng.shuffle(similar)
    rng.shuffle(others)
    first = similar[: (count + 1) // 2]
    rest = [k for k in others + similar if k not in first]
    return (first + rest)[:count]


def pope_questions(scenes: list[Scene], seed: int) -> list[dict]:
    """Balanced yes/no questions in POPE's schema about this world's objects (half of the
    "no" questions about similar objects)."""
    return shapes_world.pope_questions(scenes, seed, absent=absent_objects)


QUESTION_KINDS = ("present", "look_alike", "other")


def question_kind(scene: Scene, name: str) -> str:
    """What a POPE question about ``name`` asks of ``scene``: a ``present`` object, an absent
    ``look_alike`` (sharing a colour or a shape with a present one: the questions the SFT
    data's noise answers "Yes." at ``false_yes_rate``) or an ``other`` absent object."""
    if name in scene.object_names:
        return "present"
    return "look_alike" if name in similar_absent(scene) else "other"


def yes_by_kind(records: list[dict], kinds: dict[str, str]) -> dict[str, float]:
    """Share of POPE answers that were "yes", per question kind.

    Args:
        records: POPE's scored records (``id``, ``extracted``).
        kinds: question id -> kind (the ``kind`` column ``write_eval_data`` writes).

    Returns:
        ``{"yes_present": ..., "yes_look_alike": ..., "yes_other": ...}``; NaN for a kind
        with no question.
    """
    asked = dict.fromkeys(QUESTION_KINDS, 0)
    said_yes = dict.fromkeys(QUESTION_KINDS, 0)
    for record in records:
        kind = kinds[str(record["id"])]
        asked[kind] += 1
        said_yes[kind] += record["extracted"] == "yes"
    return {
        f"yes_{kind}": said_yes[kind] / asked[kind] if asked[kind] else math.nan
        for kind in QUESTION_KINDS
    }


def question_prompt(name: str) -> str:
    """The POPE question about object ``name``, as the built-in POPE benchmark asks it."""
    return f"Is there a {name} in the image?\n{ANSWER_HINT}"


def ordered_objects(scene: Scene) -> list[str]:
    """Object names in reading order (top-left, top-right, bottom-left, bottom-right)."""
    cell = IMAGE_SIZE // 2
    objects = sorted(scene.objects, key=lambda obj: (obj.box[1] // cell, obj.box[0] // cell))
    return [obj.name for obj in objects]


def describe(names: list[str]) -> str:
    """'There is a red circle, a blue square and a green triangle.'"""
    items = [f"a {name}" for name in names]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return f"There is {listed}."


def hallucination_score(description: str, scene: Scene) -> float:
    """10 × (1 − hallucinated mentions / mentions): the rule that scores a description."""
    record = chair_record(description, scene_objects_for_chair(scene), VOCABULARIES["shapes"])
    if not record["mentioned"]:
        return 0.0
    return 10.0 * (1.0 - len(record["hallucinated"]) / len(record["mentioned"]))


@dataclass(frozen=True)
class SFTExample:
    """One supervised example: a scene, the user's text, the target answer."""

    scene: Scene
    prompt: str
    answer: str


def sft_examples(
    num_scenes: int,
    *,
    extra_object_rate: float = 0.6,
    false_yes_rate: float = 0.5,
    seed: int = SFT_SEED,
) -> list[SFTExample]:
    """A description and balanced yes/no questions per scene, with the two kinds of noise.

    Per scene: one description, which names one extra similar object with probability
    ``extra_object_rate``; one question per present object ("Yes.") and as many about absent
    objects (half similar to a present one, as POPE asks). A similar absent object is
    answered "Yes." with probability ``false_yes_rate``; any other absent object "No.".
    """
    rng = random.Random(seed)
    examples = []
    for scene in make_scenes(num_scenes, seed):
        names = ordered_objects(scene)
        if rng.random() < extra_object_rate:
            names = names + rng.sample(similar_absent(scene), 1)
        examples.append(SFTExample(scene, DESCRIBE_PROMPT, describe(names)))
        for name in scene.object_names:
            examples.append(SFTExample(scene, question_prompt(name), "Yes."))
        similar = similar_absent(scene)
        for name in absent_objects(scene, len(scene.objects), rng):
            fooled = name in similar and rng.random() < false_yes_rate
            examples.append(SFTExample(scene, question_prompt(name), "Yes." if fooled else "No."))
    rng.shuffle(examples)
    return examples


def grounding_examples(num_scenes: int, *, seed: int = SFT_SEED + 1) -> list[SFTExample]:
    """The first SFT stage, all answers correct: one-object scenes, each with its description
    and four yes/no questions, two about its object ("Yes.") and two about absent look-alikes
    ("No."): its colour in another shape, and its shape in another colour.

    A model this small learns to read colour and shape from one object before it has to
    list several; without this stage it learned how many objects a scene had but not which,
    and without its yes/no questions it answered "Yes." to every question. Both kinds of
    look-alike are asked, so that neither the colour nor the shape alone gives the answer.
    """
    rng = random.Random(seed)
    examples = []
    for scene in make_scenes(num_scenes, seed, max_objects=1):
        obj = scene.objects[0]
        examples.append(SFTExample(scene, DESCRIBE_PROMPT, describe([obj.name])))
        other_shape = [f"{obj.color} {shape}" for shape in SHAPES if shape != obj.shape]
        other_color = [f"{color} {obj.shape}" for color in DEMO_COLORS if color != obj.color]
        for look_alikes in (other_shape, other_color):
            examples.append(SFTExample(scene, question_prompt(obj.name), "Yes."))
            examples.append(SFTExample(scene, question_prompt(rng.choice(look_alikes)), "No."))
    rng.shuffle(examples)
    return examples


def with_replay(
    examples: list[SFTExample], replayed: list[SFTExample], share: float, seed: int = REPLAY_SEED
) -> list[SFTExample]:
    """``examples`` and a ``share`` of ``replayed`` (drawn without replacement), shuffled
    together."""
    rng = random.Random(seed)
    mixed = examples + rng.sample(replayed, round(share * len(replayed)))
    rng.shuffle(mixed)
    return mixed


def _sample(
    pair_id: str,
    scene: Scene,
    prompt: str,
    responses: tuple[str, str],
    scores: tuple[float, float],
    kind: str,
) -> PreferenceSample:
    return PreferenceSample(
        id=pair_id,
        prompt=[{"role": "user", "content": prompt}],
        chosen=responses[0],
        rejected=responses[1],
        images=[scene.render()],
        score_chosen=round(scores[0], 3),
        score_rejected=round(scores[1], 3),
        modality="vision",
        source=SOURCE,
        meta={"scene": scene.image_id, "kind": kind},
    )


def _description_pair(
    scene: Scene, rng: random.Random, low_margin: bool
) -> tuple[str, str, float, float]:
    """(better, worse, their rule scores): the worse one adds (or swaps in) a wrong object."""
    names = ordered_objects(scene)
    wrong = absent_objects(scene, 2, rng)
    if low_margin:  # both flawed: the better one has one error among more mentions
        better = describe(names + wrong[:1])
        worse = describe(names[:-1] + wrong[:1]) if len(names) > 1 else describe(wrong[:2])
    else:
        better = describe(names)
        worse = (
            describe(names + wrong[:1]) if rng.random() < 0.5 else describe(names[:-1] + wrong[:1])
        )
    return better, worse, hallucination_score(better, scene), hallucination_score(worse, scene)


def preference_pairs(
    num_scenes: int,
    *,
    low_margin_rate: float = 0.2,
    flip_rate: float = 0.15,
    score_noise: float = 0.5,
    seed: int = PAIR_SEED,
) -> list[PreferenceSample]:
    """Per scene: one description pair and one yes/no pair, scored by rule (with noise).

    ``low_margin_rate`` of the description pairs compare two flawed descriptions;
    ``flip_rate`` of all pairs are mislabelled (chosen and rejected swapped, the scores
    travelling with their responses, so a score-aware loss can notice).
    """
    rng = random.Random(seed)
    samples = []
    for scene in make_scenes(num_scenes, seed):
        better, worse, s_better, s_worse = _description_pair(
            scene, rng, rng.random() < low_margin_rate
        )
        name, truth = (
            (rng.choice(scene.object_names), "Yes.")
            if rng.random() < 0.5
            else (absent_objects(scene, 1, rng)[0], "No.")
        )
        lie = "No." if truth == "Yes." else "Yes."
        candidates = [
            ("description", DESCRIBE_PROMPT, (better, worse), (s_better, s_worse)),
            ("yes_no", question_prompt(name), (truth, lie), (10.0, 0.0)),
        ]
        for kind, prompt, responses, scores in candidates:
            noisy = tuple(s + rng.gauss(0.0, score_noise) for s in scores)
            if rng.random() < flip_rate:
                responses, noisy = responses[::-1], noisy[::-1]
                kind = f"{kind}_flipped"
            pair_id = f"scene{scene.image_id}-{kind}"
            samples.append(_sample(pair_id, scene, prompt, responses, noisy, kind))
    rng.shuffle(samples)
    return samples


def write_eval_data(directory: str | Path, num_pope_scenes: int, num_chair_scenes: int) -> dict:
    """POPE and CHAIR files of held-out scenes, in the formats the built-in benchmarks read.

    Returns {"pope": path, "chair": path}. The images are written under ``images/``.
    """
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(max(num_pope_scenes, num_chair_scenes), EVAL_SEED)
    for scene in scenes:
        path = directory / "images" / f"{scene.image_id}.png"
        if not path.is_file():
            scene.render().save(path)
    pope_path = directory / "pope.jsonl"
    rows = pope_questions(scenes[:num_pope_scenes], EVAL_SEED)
    by_id = {scene.image_id: scene for scene in scenes}
    _write_jsonl(
        pope_path,
        [
            {
                **row,
                "image": f"{row['image']}.png",
                "kind": question_kind(by_id[row["image"]], row["object"]),
            }
            for row in rows
        ],
    )
    chair_path = directory / "chair.jsonl"
    chair_rows = [
        {
            "image_id": scene.image_id,
            "image": f"{scene.image_id}.png",
            "objects": scene_objects_for_chair(scene),
            "vocabulary": "shapes",
        }
        for scene in scenes[:num_chair_scenes]
    ]
    _write_jsonl(chair_path, chair_rows)
    return {"pope": pope_path, "chair": chair_path}


def question_kinds(pope_file: str | Path) -> dict[str, str]:
    """Question id -> kind (:func:`question_kind`) of a POPE file ``write_eval_data`` wrote."""
    rows = [json.loads(line) for line in Path(pope_file).read_text().splitlines() if line]
    return {str(row["question_id"]): row["kind"] for row in rows}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
