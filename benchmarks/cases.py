"""The benchmark's cases (a workload, a reference mode, a quantization) and named groups of them.

The first twelve are the original cases (one 512-token text shape, one 224 px image): their
names and state stay as they were, so earlier ``RESULTS.json`` files still merge. The scaling
cases (``scaling.py``) add how the cost grows with the prompt, its images and skewed lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling import WORKLOADS


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # text, qwen2_vl, llava
    reference: str  # adapter_off, precomputed
    quantization: str  # none, 4bit
    trl_runs: bool  # False where TRL refuses the setting
    what: str
    workload: str = ""  # a scaling workload's name; "" for the original cases


LABELS = {"qwen2_vl": "Qwen2-VL-shaped", "llava": "LLaVA-shaped"}


def _original(quant: str) -> list[Case]:
    tag = "" if quant == "none" else "-4bit"
    q = "" if quant == "none" else ", 4-bit NF4 base"
    cases = [
        Case(
            f"text{tag}-adapter_off",
            "text",
            "adapter_off",
            quant,
            True,
            f"1. text, LoRA, reference = adapter off{q}",
        ),
        Case(
            f"text{tag}-precomputed",
            "text",
            "precomputed",
            quant,
            True,
            f"2. text, LoRA, precomputed reference (TRL: precompute_ref_log_probs){q}",
        ),
    ]
    for family in ("qwen2_vl", "llava"):
        cases += [
            Case(
                f"{family}{tag}-adapter_off",
                family,
                "adapter_off",
                quant,
                True,
                f"3. vision ({LABELS[family]}), LoRA, reference = adapter off{q}",
            ),
            Case(
                f"{family}{tag}-precomputed",
                family,
                "precomputed",
                quant,
                False,
                f"4. vision ({LABELS[family]}), precomputed reference; TRL refuses it{q}",
            ),
        ]
    return cases  # fmt: skip


def _scaling(quant: str) -> list[Case]:
    tag = "" if quant == "none" else "-4bit"
    q = "" if quant == "none" else ", 4-bit NF4 base"
    cases = []
    for w in WORKLOADS.values():
        references = ["adapter_off"]
        if w.family != "text":
            references.append("precomputed")  # TRL refuses it for images
        for reference in references:
            trl_runs = not (w.family != "text" and reference == "precomputed")
            ref = "adapter off" if reference == "adapter_off" else "precomputed reference"
            cases.append(
                Case(
                    f"{w.name}{tag}-{reference}",
                    w.family,
                    reference,
                    quant,
                    trl_runs,
                    f"{w.what}; {ref}{q}",
                    workload=w.name,
                )
            )
    return cases


def _all_cases() -> dict[str, Case]:
    cases = _original("none") + _original("4bit") + _scaling("none") + _scaling("4bit")
    return {case.name: case for case in cases}


CASES = _all_cases()
ORIGINAL = [name for name, case in CASES.items() if not case.workload]
QUICK_CASES = ("text-adapter_off", "qwen2_vl-adapter_off")


def _scaling_names(quant: str, prefix: str = "", reference: str | None = None) -> list[str]:
    return [
        c.name
        for c in CASES.values()
        if c.workload
        and c.quantization == quant
        and c.workload.startswith(prefix)
        and (reference is None or c.reference == reference)
    ]


GROUPS = {
    "all": ORIGINAL,  # what `--cases all` always meant: the original twelve
    "original": ORIGINAL,
    "scaling": _scaling_names("none"),
    "scaling-4bit": _scaling_names("4bit"),
    "vlm-images": _scaling_names("none", "vlm"),
    "skewed": _scaling_names("none", "skewed"),
    "prompt-sweep": _scaling_names("none", "prompt"),
    # The GPU table: the same workloads as QLoRA, adapter-off reference, a few points each.
    # In the order they run: the most telling first, so a time limit cuts the least.
    "gpu": [
        "prompt512-4bit-adapter_off",
        "prompt4096-4bit-adapter_off",
        "vlm1-4bit-adapter_off",
        "vlm4-4bit-adapter_off",
        "skewed-4bit-adapter_off",
        "prompt2048-4bit-adapter_off",
    ],
}


def select(spec: str | None, quick: bool) -> list[str]:
    """Case names from ``--cases``: names and group names, comma-separated."""
    if spec is None:
        return list(QUICK_CASES) if quick else list(ORIGINAL)
    names: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        for name in GROUPS.get(item, [item]):
            if name not in names:
                names.append(name)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(
            f"unknown case(s) {unknown}; groups: {', '.join(GROUPS)}; cases: {', '.join(CASES)}"
        )
    return names
