"""Which autocast dtype a run uses: `amp: auto` picks bfloat16 only where the hardware computes in it natively.

On a CPU without AVX512_BF16 or AMX, oneDNN emulates bfloat16 with float32 arithmetic plus conversions: a
training step of the main job took 6.3 s there in bf16 against 0.72 s in float32 (2-core AMD EPYC, AVX2).
"""

import logging

import torch

logger = logging.getLogger("deformable_detr")


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether `device` computes in bfloat16 natively, the reason in words)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{torch.cuda.get_device_name(device)} computes in bfloat16"
        return False, f"{torch.cuda.get_device_name(device)} has no bfloat16 arithmetic (compute capability < 8.0)"
    if device.type == "cpu":
        # torch's own CPUID checks; private, so tests/test_precision.py guards their presence.
        if torch.cpu._is_amx_tile_supported():
            return True, "this CPU has AMX"
        if torch.cpu._is_avx512_bf16_supported():
            return True, "this CPU has AVX512_BF16"
        return False, "this CPU has neither AVX512_BF16 nor AMX, so bfloat16 would be emulated (several times slower)"
    return False, f"no bfloat16 check for device type {device.type!r}"


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast mode a run uses: `amp` itself, except that "auto" becomes "bf16" where `native_bf16`, else
    "off". Logs the choice for "auto", and warns when "bf16" was asked for on hardware that would emulate it."""
    if amp not in ("auto", "bf16"):
        return amp
    native, why = native_bf16(device)
    if amp == "auto":
        chosen = "bf16" if native else "off"
        logger.info("amp: auto -> %s: %s", chosen, why)
        return chosen
    if not native:
        logger.warning("amp: bf16 on %s: %s; `amp: auto` would train in float32 here", device.type, why)
    return amp
