"""Entry point: build the Deformable DETR model, its criterion and post-processor from hyperparameters.

    model, criterion, postprocessors = build_model(hparams)   # postprocessors = {"bbox": PostProcess}
"""

from deformable_detr.models.build import build_model

__all__ = ["build_model"]
