"""The shipped accelerate config files: accelerate's own loader and launcher accept them."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType, constants

import mmdpo

CONFIG_DIR = Path(mmdpo.__file__).parent / "configs" / "accelerate"
EXPECTED = {
    "ddp.yaml": DistributedType.MULTI_GPU,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
    "fsdp.yaml": DistributedType.FSDP,
}


def test_every_expected_file_is_shipped():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_and_documents_its_launch(name):
    path = CONFIG_DIR / name
    config = load_config_from_file(str(path))
    assert config.distributed_type == EXPECTED[name]
    assert config.num_processes >= 2 and config.num_machines == 1
    header = path.read_text()
    assert f"--config_file mmdpo/configs/accelerate/{name}" in header
    assert "-m mmdpo.cli train" in header and "num_processes" in header


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launcher_reads_every_key(name):
    """accelerate launch copies nested keys onto its arguments; an unknown one is lost silently."""
    path = CONFIG_DIR / name
    config = load_config_from_file(str(path))
    known = {action.dest for action in launch_command_parser()._actions}
    nested = {**config.deepspeed_config, **config.fsdp_config}
    assert not {key for key in nested if key not in known}, "keys accelerate launch ignores"

    parser = launch_command_parser()
    args, _, _ = _validate_launch_command(
        parser.parse_args(["--config_file", str(path), "-m", "mmdpo.cli", "train"])
    )
    assert args.num_processes == config.num_processes
    assert args.use_deepspeed == (config.distributed_type == DistributedType.DEEPSPEED)
    assert args.use_fsdp == (config.distributed_type == DistributedType.FSDP)
    assert args.multi_gpu == (config.distributed_type == DistributedType.MULTI_GPU)


def test_deepspeed_settings_match_the_engine():
    """mmdpo accumulates gradients itself, so DeepSpeed must not (see the files' caveats)."""
    for name, stage in (("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)):
        ds = load_config_from_file(str(CONFIG_DIR / name)).deepspeed_config
        assert ds["zero_stage"] == stage
        assert ds["gradient_accumulation_steps"] == 1
        assert ds["zero3_init_flag"] is False  # the precomputed reference runs before sharding
        assert ds["offload_optimizer_device"] in ("none", "cpu", "nvme")


def test_fsdp_settings_suit_lora():
    fsdp = load_config_from_file(str(CONFIG_DIR / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_use_orig_params"] is True  # frozen base + trainable LoRA in one unit
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is False
    assert fsdp["fsdp_sharding_strategy"] in constants.FSDP_SHARDING_STRATEGY
    assert fsdp["fsdp_state_dict_type"] in constants.FSDP_STATE_DICT_TYPE
    assert fsdp["fsdp_auto_wrap_policy"] in constants.FSDP_AUTO_WRAP_POLICY
    assert fsdp["fsdp_backward_prefetch"] in constants.FSDP_BACKWARD_PREFETCH
