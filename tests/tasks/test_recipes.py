"""Every YAML shipped under tasks/: it loads on its task's defaults, its header says how to run
it, and each Uni-DPO recipe carries the paper's hyperparameters."""

import re
from pathlib import Path

import pytest
import yaml

from data_adapters import ADAPTERS
from mmdpo.losses import get_loss
from tasks import TASKS, get_task

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "tasks").rglob("*.yaml"))
IDS = [str(path.relative_to(REPO / "tasks")) for path in RECIPES]

# Uni-DPO (Peng et al., arXiv 2506.10054, ICLR 2026): the hyperparameters of the paper's
# hyperparameter table (implementation details, appendix), as in DESIGN.md and in the
# authors' configs (pspdada/Uni-DPO: Textual/train/configs/*.yaml,
# Math/train/configs/Qwen2.5-Math-7B-Uni-DPO.yaml,
# Multimodal/LlamaFactory/examples/uni_dpo/Qwen2_VL_2B_uni_dpo.sh). eta 0.7, gamma 3 throughout.
PAPER_TABLE = {
    # setting: (beta, tau_ref, nll_lambda, tau_good, learning_rate, epochs)
    "gemma2-9b-it-text": (10.0, 0.8, 0.001, 3.2, 8e-7, 1),
    "llama3-8b-instruct-text": (2.0, 1.0, 0.001, 3.2, 1e-6, 1),
    "llama3-8b-instruct-text-v0.2": (10.0, 1.0, 0.001, 3.2, 1e-6, 1),
    "qwen2.5-math-7b-math": (2.0, 2.0, 0.2, 8.0, 1e-6, 2),
    "qwen2-vl-2b-vision": (2.0, 2.0, 0.001, 2.5, 6e-6, 1),
}
PAPER_MODELS = {
    "gemma2-9b-it-text": "google/gemma-2-9b-it",
    "llama3-8b-instruct-text": "meta-llama/Meta-Llama-3-8B-Instruct",
    "llama3-8b-instruct-text-v0.2": "meta-llama/Meta-Llama-3-8B-Instruct",
    "qwen2.5-math-7b-math": "Qwen/Qwen2.5-Math-7B",
    "qwen2-vl-2b-vision": "Qwen/Qwen2-VL-2B-Instruct",
}
# Settings that ship a full-precision LoRA recipe and a QLoRA recipe that fits 24 GB.
BOTH_PRECISIONS = [
    "gemma2-9b-it-text",
    "llama3-8b-instruct-text",
    "qwen2.5-math-7b-math",
    "qwen2-vl-2b-vision",
]
# SimPO (Meng et al., NeurIPS 2024, arXiv 2405.14734), the authors' release
# (princeton-nlp/SimPO training_configs): beta and gamma/beta ratio per model; mmdpo's gamma is
# the margin itself (mmdpo/losses/simpo.py), so gamma = ratio * beta. The vision baseline is
# Uni-DPO's Qwen2_vl_2B_simpo.sh (LLaMA-Factory's simpo_gamma is the margin itself).
SIMPO_TABLE = {
    # setting: (beta, gamma, learning_rate)
    "gemma2-9b-it-text": (10.0, 10.0 * 0.5, 8e-7),
    "llama3-8b-instruct-text": (2.5, 2.5 * 0.55, 1e-6),
    "qwen2-vl-2b-vision": (2.0, 1.0, 5e-7),
}


def header_of(path: Path) -> str:
    """The comment block at the top of a file."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def task_of(path: Path) -> str:
    """The task named by the header's ``mmdpo train TASK --config`` command."""
    match = re.search(r"^#\s+mmdpo train (\w+) --config (\S+)\s*$", header_of(path), re.M)
    assert match, f"{path}: no `mmdpo train TASK --config PATH` line in the header"
    return match.group(1)


def load(path: Path):
    return get_task(task_of(path)).load_config(path)


def setting_of(path: Path, kind: str) -> str | None:
    match = re.search(rf"^# {kind} setting: (\S+)", header_of(path), re.M)
    return match.group(1) if match else None


def raw_loss(path: Path) -> str:
    return (yaml.safe_load(path.read_text(encoding="utf-8")).get("loss") or {}).get("name", "")


UNI_DPO = [p for p in RECIPES if raw_loss(p) == "uni_dpo"]
UNI_DPO_IDS = [str(p.relative_to(REPO / "tasks")) for p in UNI_DPO]


def test_recipes_are_shipped_for_every_task():
    assert len(RECIPES) >= 18
    assert {task_of(path) for path in RECIPES} == set(TASKS)


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_recipe_validates_on_its_task_defaults(path):
    task = task_of(path)
    assert path.parent.name == task, f"{path}: header says task {task}, folder says otherwise"
    config = load(path)
    assert config.task == task
    assert config.model.name_or_path
    resolved = get_loss(config.loss.name).resolve_kwargs(config.loss.kwargs)
    assert set(config.loss.kwargs) <= set(resolved)


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_header_commands_name_this_file(path):
    header = header_of(path)
    relative = path.relative_to(REPO).as_posix()
    configs = re.findall(r"--config (\S+)", header)
    assert configs, f"{path}: no --config in the header"
    assert set(configs) == {relative}
    assert re.search(rf"^#\s+mmdpo train \w+ --config {re.escape(relative)}$", header, re.M)
    assert "accelerate launch" in header and "-m mmdpo.cli" in header


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_header_names_model_data_and_memory(path):
    header = header_of(path)
    config = load(path)
    model_line = re.search(r"^# Model: (\S+)", header, re.M)
    assert model_line and model_line.group(1) == config.model.name_or_path
    assert re.search(r"^# Data: .*\S", header, re.M)
    memory = re.search(r"^# Memory: about (\d+) GB", header, re.M)
    assert memory, f"{path}: no '# Memory: about N GB' line"
    assert "estimate" in header


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_data_formats_are_registered(path):
    config = load(path)
    entries = config.data.train if isinstance(config.data.train, list) else [config.data.train]
    for entry in entries:
        fmt = entry.get("format", config.data.format) if isinstance(entry, dict) else None
        assert (fmt or config.data.format) in ADAPTERS


@pytest.mark.parametrize("path", UNI_DPO, ids=UNI_DPO_IDS)
def test_uni_dpo_recipe_matches_the_paper_table(path):
    setting = setting_of(path, "Paper")
    assert setting is not None, f"{path}: no '# Paper setting: KEY' line in the header"
    config = load(path)
    kwargs = config.loss.kwargs
    assert kwargs["eta"] == 0.7 and kwargs["gamma"] == 3.0
    if setting == "none":
        return
    assert setting in PAPER_TABLE, f"{path}: unknown paper setting {setting!r}"
    beta, tau_ref, nll_lambda, tau_good, learning_rate, epochs = PAPER_TABLE[setting]
    assert kwargs["beta"] == beta
    assert kwargs["tau_ref"] == tau_ref
    assert kwargs["nll_lambda"] == nll_lambda
    assert kwargs["tau_good"] == tau_good
    assert config.train.learning_rate == pytest.approx(learning_rate)
    assert config.train.epochs == epochs
    assert config.model.name_or_path == PAPER_MODELS[setting]
    # The paper's scores are raw: tau_good is on the data's own scale.
    assert config.data.calibration == "none"
    assert config.train.batch_size * config.train.grad_accum == 128


@pytest.mark.parametrize("setting", BOTH_PRECISIONS)
def test_paper_settings_ship_lora_and_a_24gb_qlora(setting):
    recipes = [p for p in UNI_DPO if setting_of(p, "Paper") == setting]
    quantizations = {load(p).model.quantization: p for p in recipes}
    assert set(quantizations) == {"none", "4bit"}, f"{setting}: {sorted(quantizations)}"
    qlora_path = quantizations["4bit"]
    qlora = load(qlora_path)
    assert qlora.model.quant_type == "nf4"
    assert qlora.model.gradient_checkpointing
    assert qlora.lora.enabled
    memory = re.search(r"^# Memory: about (\d+) GB", header_of(qlora_path), re.M)
    assert int(memory.group(1)) <= 24


def test_every_paper_setting_has_a_recipe():
    shipped = {setting_of(p, "Paper") for p in UNI_DPO}
    assert set(PAPER_TABLE) <= shipped


@pytest.mark.parametrize("path", [p for p in RECIPES if raw_loss(p) == "dpo"])
def test_dpo_baselines_use_beta_point_one_on_summed_logps(path):
    config = load(path)
    assert config.loss.kwargs["beta"] == 0.1
    assert config.loss.length_normalized is False
    assert config.reference.mode != "none"
    assert setting_of(path, "Baseline").startswith("dpo/")


@pytest.mark.parametrize("path", [p for p in RECIPES if raw_loss(p) == "simpo"])
def test_simpo_baselines_follow_their_source(path):
    config = load(path)
    assert config.reference.mode == "none"
    setting = setting_of(path, "Baseline").removeprefix("simpo/")
    if setting in SIMPO_TABLE:
        beta, gamma, learning_rate = SIMPO_TABLE[setting]
        assert config.loss.kwargs["beta"] == beta
        assert config.loss.kwargs["gamma"] == pytest.approx(gamma)
        assert config.train.learning_rate == pytest.approx(learning_rate)


def test_each_uni_dpo_setup_has_dpo_and_simpo_baselines():
    baselines = {setting_of(p, "Baseline") for p in RECIPES if setting_of(p, "Baseline")}
    for setting in BOTH_PRECISIONS:
        assert {f"dpo/{setting}", f"simpo/{setting}"} <= baselines


def test_mixed_recipe_trains_three_modalities_with_zscore():
    (path,) = get_task("mixed").recipes()
    config = load(path)
    assert config.model.name_or_path == "Qwen/Qwen2-VL-2B-Instruct"
    assert config.data.calibration == "zscore"
    assert config.loss.kwargs["tau_good"] == "auto"
    entries = config.data.train
    assert isinstance(entries, list)
    for entry in entries:
        assert {"path", "format", "modality", "source"} <= set(entry)
        assert set(entry) <= {"path", "format", "modality", "source", "columns"}
        assert entry["format"] in ADAPTERS
    assert {entry["modality"] for entry in entries} == {"text", "math", "vision"}
    assert len({entry["source"] for entry in entries}) == len(entries)


def test_docs_list_every_recipe():
    docs = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    for path in RECIPES:
        assert path.relative_to(REPO).as_posix() in docs
