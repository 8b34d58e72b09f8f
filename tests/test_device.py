"""Where training runs: the device choice, bfloat16, and what a benchmark reports.

This machine has no GPU, so CUDA's presence is simulated (torch.cuda's answers patched):
what is tested is the choice the code makes, not a GPU's arithmetic.
"""

from __future__ import annotations

import pytest
import torch

from core import UserError, accel, presets
from core import device as devices
from core.config import ModelConfig
from core.models import build
from core.models.base import InputSpec


@pytest.fixture
def gpu(monkeypatch):
    """A machine that reports one CUDA GPU with bfloat16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "NVIDIA H100 80GB HBM3")


def test_auto_takes_the_gpu_when_there_is_one(gpu):
    assert devices.pick("auto") == torch.device("cuda")
    assert devices.pick("cuda") == torch.device("cuda")
    assert devices.pick("cpu") == torch.device("cpu")  # asked for: the CPU even beside a GPU
    assert devices.use_bf16(torch.device("cuda")) is True
    assert devices.use_bf16(torch.device("cuda"), "off") is False


def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.pick("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="no CUDA GPU"):
        devices.pick("cuda")


def test_bf16_on_the_cpu_follows_the_cpus_instructions(monkeypatch):
    cpu = torch.device("cpu")
    for has in (True, False):
        monkeypatch.setattr(devices, "cpu_has_bf16", lambda has=has: has)
        assert devices.use_bf16(cpu) is has
    assert devices.use_bf16(cpu, "on") is True


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_goes_where_the_machine_is_fastest(name):
    """No preset pins the CPU or bfloat16: on a GPU machine each trains there, in bf16."""
    train = presets.get(name).config.train
    assert (train.device, train.bf16) == ("auto", "auto")


def test_the_cpu_speed_ups_step_aside_off_the_cpu():
    """core.accel swaps layers of a model on the CPU only; the same call on another device
    (the meta device stands in for a GPU here) leaves every layer as it was built."""
    with torch.device("meta"):
        model = build(ModelConfig("resnet_mini"), InputSpec())
    kinds = [type(m) for m in model.modules()]
    accel.accelerate(model)
    assert [type(m) for m in model.modules()] == kinds
    assert not model.body._forward_pre_hooks  # no row-major hook either


def test_a_benchmark_says_which_device_it_ran_on(gpu):
    assert devices.describe(torch.device("cuda")) == {
        "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "bf16": True,
        "threads": devices.threads()}  # fmt: skip
    cpu = devices.describe(torch.device("cpu"), "off")
    assert cpu["device"] == "cpu" and cpu["bf16"] is False and cpu["device_name"]
