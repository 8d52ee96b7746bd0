"""`amp: auto`: bfloat16 autocast only where the hardware computes in bfloat16, float32 elsewhere."""

import logging

import pytest
import torch

from deformable_detr.config.optim import OptimizationSettings
from deformable_detr.training.precision import native_bf16, resolve_amp

CPU = torch.device("cpu")


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not cpu_flags(), reason="reads the CPU's flags from /proc/cpuinfo (Linux on x86)")
def test_auto_follows_this_cpus_bfloat16_instructions():
    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    assert native_bf16(CPU)[0] == native
    assert resolve_amp("auto", CPU) == ("bf16" if native else "off")


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(False, False, "off"), (False, True, "bf16"),
                                                        (True, False, "bf16")])
def test_auto_picks_bf16_only_on_cpus_with_avx512_bf16_or_amx(monkeypatch, caplog, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    with caplog.at_level(logging.INFO, logger="deformable_detr"):
        assert resolve_amp("auto", CPU) == expected
    assert f"amp: auto -> {expected}" in caplog.text


def test_explicit_bf16_is_kept_with_a_warning_where_it_would_be_emulated(monkeypatch, caplog):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    with caplog.at_level(logging.WARNING, logger="deformable_detr"):
        assert resolve_amp("bf16", CPU) == "bf16"
    assert "emulated" in caplog.text and "amp: auto" in caplog.text


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_other_modes_pass_through_unchanged(amp, caplog):
    with caplog.at_level(logging.INFO, logger="deformable_detr"):
        assert resolve_amp(amp, CPU) == amp
    assert caplog.text == ""


def test_the_cpu_checks_auto_relies_on_exist_in_this_torch():
    # Private torch functions: a torch upgrade that drops them fails here, not in a user's run.
    assert isinstance(torch.cpu._is_amx_tile_supported(), bool)
    assert isinstance(torch.cpu._is_avx512_bf16_supported(), bool)


def test_auto_is_a_valid_setting_and_a_typo_is_not():
    OptimizationSettings(amp="auto").validate()
    with pytest.raises(ValueError, match="amp"):
        OptimizationSettings(amp="bf32").validate()
