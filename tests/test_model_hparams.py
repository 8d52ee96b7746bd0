"""Hyperparameters: defaults, each key read by its owner, clear errors for misspelled or contradictory settings."""

import math

import pytest

from deformable_detr.config.experiment import TRIAL_KEYS, parse_hyperparameters
from deformable_detr.config.model import ModelSettings
from deformable_detr.config.optim import OptimizationSettings

# The hyperparameters of a whole Determined experiment config for the authors' base model.
WHOLE_CONFIG = {
    "lr": 2e-4, "lr_backbone_names": ["backbone.0"], "lr_backbone": 2e-5,
    "lr_linear_proj_names": ["reference_points", "sampling_offsets"], "lr_linear_proj_mult": 0.1,
    "global_batch_size": 32, "weight_decay": 1e-4, "lr_drop": 40, "clip_max_norm": 0.1, "sgd": False,
    "with_box_refine": False, "two_stage": False, "backbone": "resnet50", "dilation": False,
    "position_embedding": "sine", "position_embedding_scale": 2 * math.pi, "num_feature_levels": 4,
    "enc_layers": 6, "dec_layers": 6, "dim_feedforward": 1024, "hidden_dim": 256, "dropout": 0.1, "nheads": 8,
    "num_queries": 300, "dec_n_points": 4, "enc_n_points": 4, "masks": False, "aux_loss": True,
    "set_cost_class": 2, "set_cost_bbox": 5, "set_cost_giou": 2, "mask_loss_coef": 1, "dice_loss_coef": 1,
    "cls_loss_coef": 2, "bbox_loss_coef": 5, "giou_loss_coef": 2, "focal_alpha": 0.25, "num_classes": 91,
    "pretrained_backbone": True,
}


def test_empty_mapping_gives_the_authors_defaults() -> None:
    config, optimization = parse_hyperparameters({})
    assert config == ModelSettings() and optimization == OptimizationSettings()
    assert (config.hidden_dim, config.num_queries, config.num_feature_levels, config.num_classes) == (256, 300, 4, 91)
    assert config.pretrained_backbone is False


def test_whole_experiment_config_is_accepted_and_each_key_read_by_its_owner() -> None:
    config, optimization = parse_hyperparameters(WHOLE_CONFIG)
    assert optimization.lr_backbone == 2e-5 and optimization.lr_backbone_names == ("backbone.0",)
    assert config.pretrained_backbone is True
    assert config.set_cost_bbox == 5.0 and isinstance(config.set_cost_bbox, float)
    assert {"lr", "weight_decay", "clip_max_norm", "global_batch_size", "epochs", "amp"} <= TRIAL_KEYS


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"hiden_dim": 128}, r"'hiden_dim' \(did you mean 'hidden_dim'\?\)"),
        ({"two_stages": True}, r"'two_stages' \(did you mean 'two_stage'\?\)"),
        ({"hidden_dim": "256"}, "'hidden_dim' must be an integer"),
        ({"hidden_dim": 256.0}, "'hidden_dim' must be an integer"),
        ({"aux_loss": 1}, "'aux_loss' must be true or false"),
        ({"focal_alpha": "0.25"}, "'focal_alpha' must be a number"),
        ({"hidden_dim": 96, "nheads": 7}, "'hidden_dim' must be divisible by nheads"),
        ({"hidden_dim": 48, "nheads": 8}, "'hidden_dim' must be a multiple of 32"),
        ({"num_feature_levels": 2}, "'num_feature_levels' must be 1"),
        ({"num_feature_levels": 0}, "'num_feature_levels' must be 1"),
        ({"backbone": "resnet152"}, "'backbone' must be one of .*, got 'resnet152'"),
        ({"backbone": "resnet18", "dilation": True}, "'dilation': resnet18"),
        ({"position_embedding": "cosine"}, "'position_embedding'"),
        ({"dropout": 1.0}, "'dropout' must be in"),
        ({"dec_layers": 0}, "'dec_layers' must be >= 1"),
        ({"set_cost_class": 0, "set_cost_bbox": 0, "set_cost_giou": 0}, "cannot all be 0"),
        ({"two_stage": True}, "'two_stage' requires 'with_box_refine'"),
        ({"masks": True}, "'masks': segmentation is not supported"),
        ({"backbone_norm": "group_norm"}, "'backbone_norm' must be one of .*, got 'group_norm'"),
        ({"trainable_backbone_layers": 6}, "'trainable_backbone_layers' must be in"),
    ],
)
def test_bad_settings_raise_naming_the_key(hparams: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hyperparameters(hparams)


def test_backbone_trains_only_with_a_positive_learning_rate() -> None:
    assert parse_hyperparameters({"lr_backbone": 1e-5})[1].train_backbone
    assert not parse_hyperparameters({"lr_backbone": 0})[1].train_backbone
