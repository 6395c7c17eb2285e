"""The task registry: names, errors, and defaults that validate once a model and data are given."""

import pytest

from eval.registry import BENCHMARKS
from mmdpo.losses import get_loss
from tasks import TASKS, get_task

FILLED = ["model.name_or_path=some/model", "data.train=pairs.jsonl"]
# Registered by the lead once eval/ifeval/ lands (see the placeholder in eval/registry.py).
PENDING_BENCHMARKS = {"ifeval"}


def test_registry_is_the_four_tasks_by_name():
    assert list(TASKS) == ["text", "math", "vision", "mixed"]
    for name, task in TASKS.items():
        assert task.name == name
        assert get_task(name) is task


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown task 'audio'; valid tasks: text, math, vision"):
        get_task("audio")


@pytest.mark.parametrize("name", list(TASKS))
def test_defaults_validate_with_model_and_data(name):
    task = get_task(name)
    config = task.load_config(None, FILLED)
    assert config.task == name
    assert config.data.format == task.data_format
    assert config.data.train == "pairs.jsonl"
    assert task.adapter.name == task.data_format
    spec = get_loss(config.loss.name)
    assert spec.resolve_kwargs(config.loss.kwargs) == spec.defaults


@pytest.mark.parametrize("name", list(TASKS))
def test_defaults_alone_name_the_missing_fields(name):
    with pytest.raises(ValueError, match="model.name_or_path: required"):
        get_task(name).load_config(None, ["data.train=pairs.jsonl"])


@pytest.mark.parametrize("name", list(TASKS))
def test_defaults_leave_loss_kwargs_to_recipes(name):
    """A default loss.kwargs would be deep-merged into another loss's kwargs: dpo would then
    receive uni_dpo's eta and reject it. Switching the loss by override must just work."""
    task = get_task(name)
    assert "kwargs" not in task.defaults.get("loss", {})
    config = task.load_config(None, [*FILLED, "loss.name=dpo", "loss.kwargs.beta=0.1"])
    assert get_loss("dpo").resolve_kwargs(config.loss.kwargs)["beta"] == 0.1


@pytest.mark.parametrize("name", list(TASKS))
def test_eval_suite_names_benchmarks(name):
    suite = get_task(name).eval_suite
    assert suite[0] == "preference"
    unknown = set(suite) - set(BENCHMARKS) - PENDING_BENCHMARKS
    assert not unknown, f"{name}: unknown benchmarks {sorted(unknown)}"


def test_expected_eval_suites():
    assert get_task("text").eval_suite == ["preference", "ifeval"]
    assert get_task("math").eval_suite == ["preference", "gsm8k", "math500"]
    assert get_task("vision").eval_suite == ["preference", "pope", "chair"]
    everything = {"preference", "ifeval", "gsm8k", "math500", "pope", "chair"}
    assert set(get_task("mixed").eval_suite) == everything


def test_config_defaults_is_a_copy():
    task = get_task("text")
    copy = task.config_defaults()
    copy["data"]["max_length"] = 1
    assert task.defaults["data"]["max_length"] == 2048


@pytest.mark.parametrize("name", list(TASKS))
def test_each_task_ships_recipes(name):
    recipes = get_task(name).recipes()
    assert recipes, f"no recipe under tasks/recipes/{name}/"
    assert all(path.parent.name == name for path in recipes)
