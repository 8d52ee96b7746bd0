"""Entry point: build the Deformable DETR model, its criterion and post-processor from hyperparameters."""

from collections.abc import Mapping
from typing import Any

from torch import nn

from deformable_detr.backbone import build_backbone
from deformable_detr.criterion import SetCriterion, build_criterion
from deformable_detr.deformable_transformer import build_deformable_transformer
from deformable_detr.detector import DeformableDETR
from deformable_detr.hparams import ModelConfig
from deformable_detr.postprocess import PostProcess


def build_detector(config: ModelConfig) -> DeformableDETR:
    return DeformableDETR(
        build_backbone(config),
        build_deformable_transformer(config),
        num_classes=config.num_classes,
        num_queries=config.num_queries,
        num_feature_levels=config.num_feature_levels,
        aux_loss=config.aux_loss,
        with_box_refine=config.with_box_refine,
        two_stage=config.two_stage,
    )


def build_model(hparams: Mapping[str, Any]) -> tuple[DeformableDETR, SetCriterion, dict[str, nn.Module]]:
    """(model, criterion, {"bbox": PostProcess}) from an experiment's hyperparameters mapping.

    Unknown, mistyped or contradictory model settings raise ValueError naming the key; the trial's own
    keys (deformable_detr.hparams.TRIAL_KEYS) are ignored.
    """
    config = ModelConfig.from_hparams(hparams)
    postprocess = PostProcess(nms_iou_threshold=config.nms_iou_threshold)
    return build_detector(config), build_criterion(config), {"bbox": postprocess}
