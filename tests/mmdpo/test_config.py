"""Config: YAML + overrides, unknown keys and types named, cross-field rules."""

import pytest

from mmdpo.config import ConfigError, load_config, parse_override

BASE = ["model.name_or_path=some/model", "data.train=pairs.jsonl"]


def test_overrides_parse_yaml_values():
    config = load_config(
        None, [*BASE, "train.learning_rate=1e-5", "loss.kwargs.beta=2", "lora.r=8"]
    )
    assert config.train.learning_rate == pytest.approx(1e-5)
    assert config.loss.kwargs == {"beta": 2}
    assert config.lora.r == 8


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "model:\n  name_or_path: a/b\ndata:\n  train: x.jsonl\ntrain:\n  learning_rate: 1e-6\n"
    )
    config = load_config(path, ["train.learning_rate=3e-6"])
    assert config.model.name_or_path == "a/b"
    assert config.train.learning_rate == pytest.approx(3e-6)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=1", "train.lr: unknown key; valid keys: batch_size"),
        ("train.batch_size=two", "train.batch_size: expected int, got 'two'"),
        ("model.quantization=3bit", "model.quantization: '3bit' is not one of none, 8bit, 4bit"),
        ("reference.mode=twin", "reference.mode: 'twin' is not one of"),
        ("train.warmup_ratio=1.5", "train.warmup_ratio: must be in [0, 1)"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, [*BASE, override])
    assert message in str(info.value)


def test_missing_model_is_an_error():
    with pytest.raises(ConfigError, match="model.name_or_path: required"):
        load_config(None, ["data.train=x.jsonl"])


def test_quantization_needs_lora():
    with pytest.raises(ConfigError, match="only be trained with LoRA"):
        load_config(None, [*BASE, "model.quantization=4bit", "lora.enabled=false"])


def test_adapter_off_needs_lora():
    with pytest.raises(ConfigError, match="adapter_off needs LoRA"):
        load_config(None, [*BASE, "lora.enabled=false"])


def test_override_without_equals():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("train.learning_rate")


def test_yaml_cannot_construct_python_objects(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss.kwargs.beta=high"], "loss.kwargs.beta: expected a positive number, got 'high'"),
        (["loss.kwargs.beta=0"], "loss.kwargs.beta: expected a positive number, got 0"),
        (["loss.kwargs.beta=.inf"], "loss.kwargs.beta: expected a positive number, got inf"),
        (["loss.kwargs.gamma=-1"], "loss.kwargs.gamma: expected a number >= 0, got -1"),
        (["loss.kwargs.tau_good=x"], "loss.kwargs.tau_good: expected a finite number or 'auto'"),
        (["loss.kwargs.use_perf_weight=3"], "loss.kwargs.use_perf_weight: expected true or false"),
        (["loss.kwargs.tau_ref=[1]"], "loss.kwargs.tau_ref: expected a finite number, got [1]"),
        (
            ["loss.name=dpo", "loss.kwargs.label_smoothing=0.5"],
            "loss.kwargs.label_smoothing: expected a number in [0, 0.5), got 0.5",
        ),
        (["loss.kwargs.gama=1"], "loss.kwargs: loss 'uni_dpo' got unknown hyperparameter"),
        (["loss.name=kto"], "loss.name: unknown loss 'kto'; valid losses: dpo, hinge"),
    ],
)
def test_loss_name_and_kwargs_are_checked_when_the_config_is_read(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [*BASE, *overrides])
    assert str(error.value).startswith(message)


def test_loss_kwargs_accept_yaml_exponents_and_auto(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  kwargs: {beta: 1e-1, tau_good: auto, use_perf_weight: false}\n")
    config = load_config(path, BASE)
    assert config.loss.kwargs == {"beta": 0.1, "tau_good": "auto", "use_perf_weight": False}
    setting = config.loss.resolve()
    assert setting.name == "uni_dpo" and setting.hyperparams["beta"] == 0.1
    assert setting.average is True


def test_one_resolved_loss_setting_decides_mean_or_sum():
    assert load_config(None, [*BASE, "loss.name=dpo"]).loss.resolve().average is False
    assert load_config(None, BASE).loss.resolve().average is True
    ablation = load_config(None, [*BASE, "loss.length_normalized=false"]).loss.resolve()
    assert ablation.average is False and ablation.name == "uni_dpo"
