"""Building the Deformable DETR model, its criterion and post-processor from hyperparameters."""

from collections.abc import Mapping
from typing import Any

from torch import nn

from deformable_detr.config.model import ModelConfig
from deformable_detr.models.backbone import build_backbone
from deformable_detr.models.criterion import SetCriterion, build_criterion
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.postprocess import PostProcess
from deformable_detr.models.transformer import build_deformable_transformer


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
    """(model, criterion, {"bbox": PostProcess}) from an experiment's hyperparameters mapping."""
    config = ModelConfig.from_hparams(hparams)
    postprocess = PostProcess(nms_iou_threshold=config.nms_iou_threshold)
    return build_detector(config), build_criterion(config), {"bbox": postprocess}
