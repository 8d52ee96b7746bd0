"""A tiny two-stage model with box refinement in float64, and two images, for the tests of its training-only
query groups (hybrid matching, query denoising)."""

import torch

import model

TINY_TWO_STAGE = {
    "backbone": "resnet18", "hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 3,
    "dim_feedforward": 64, "num_queries": 8, "enc_n_points": 2, "dec_n_points": 2, "dropout": 0.0,
    "num_classes": 5, "with_box_refine": True, "two_stage": True,
}


def images() -> list[torch.Tensor]:
    """Two float64 images of different sizes."""
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(3, 96, 96, generator=generator, dtype=torch.float64),
            torch.randn(3, 80, 96, generator=generator, dtype=torch.float64)]


def build(hparams: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(detector in float64, criterion), with weights from seed 0."""
    torch.manual_seed(0)
    detector, criterion, _ = model.build_model(hparams)
    return detector.double(), criterion
