"""Building the Deformable DETR model, its criterion and post-processor from the settings."""

from collections.abc import Mapping
from typing import Any

from torch import nn

from deformable_detr.config.experiment import parse_hyperparameters
from deformable_detr.config.model import AUTO_NUM_CLASSES, ModelSettings
from deformable_detr.models.backbone import build_backbone
from deformable_detr.models.criterion import SetCriterion, build_criterion
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.postprocess import PostProcess
from deformable_detr.models.transformer import build_deformable_transformer


def build_detector(settings: ModelSettings, train_backbone: bool) -> DeformableDETR:
    return DeformableDETR(
        build_backbone(settings, train_backbone),
        build_deformable_transformer(settings),
        num_classes=settings.num_classes,
        num_queries=settings.num_queries,
        num_feature_levels=settings.num_feature_levels,
        aux_loss=settings.aux_loss,
        with_box_refine=settings.with_box_refine,
        two_stage=settings.two_stage,
    )


def build_model(hparams: Mapping[str, Any]) -> tuple[DeformableDETR, SetCriterion, dict[str, nn.Module]]:
    """(model, criterion, {"bbox": PostProcess}) from an experiment's hyperparameters mapping.

    Unknown, mistyped or contradictory settings raise ValueError naming the key (see
    `deformable_detr.config.experiment.parse_hyperparameters`).
    """
    settings, optimization = parse_hyperparameters(hparams)
    if settings.num_classes == AUTO_NUM_CLASSES:
        raise ValueError(
            "hyperparameter 'num_classes' is 'auto': the class count comes from the training annotations; "
            "resolve it first with deformable_detr.data.labels.fit_num_classes (the trial does)"
        )
    postprocess = PostProcess(nms_iou_threshold=settings.nms_iou_threshold)
    detector = build_detector(settings, train_backbone=optimization.train_backbone)
    return detector, build_criterion(settings), {"bbox": postprocess}
