"""Single training steps of the real trial inside Determined's local context: a non-finite loss stops the
run with the step and the loss terms (bf16 runs are in test_trial.py)."""

import pytest
import determined as det

from model_def import DeformableDETRTrial
from trial_runs import TINY_MODEL

EXPERIMENT = {
    "searcher": {"name": "single", "metric": "mAP", "smaller_is_better": False},
    "reproducibility": {"experiment_seed": 0},
    "data": {"backend": "fake", "fake_length": 4, "image_scale": 0.2, "num_workers": 0},
}


def first_batch(trial: DeformableDETRTrial):
    loader = trial.build_training_data_loader()
    return next(iter(loader))


def make_trial(**hparams):
    context_manager = det.pytorch.init(
        hparams={**TINY_MODEL, "global_batch_size": 2, **hparams}, exp_conf=EXPERIMENT,
        enable_tensorboard_logging=False,
    )
    return context_manager


def test_non_finite_loss_stops_with_the_step_and_the_terms():
    with make_trial() as context:
        trial = DeformableDETRTrial(context)
        trial.skip_batches = 9  # as after a resume: the message gives the run's own batch number
        trial.criterion.weight_dict["loss_bbox"] = float("inf")  # a diverged weighted loss
        with pytest.raises(FloatingPointError, match=r"training batch 9 \(epoch 4\).*loss_ce=.*loss_bbox="):
            trial.train_batch(first_batch(trial), epoch_idx=0, batch_idx=0)


def test_non_finite_model_outputs_stop_before_matching():
    with make_trial() as context:
        trial = DeformableDETRTrial(context)
        images, mask, targets = first_batch(trial)
        images[0, :, :4, :4] = float("nan")
        with pytest.raises(FloatingPointError, match=r"non-finite model output pred_\w+ at training batch 0"):
            trial.train_batch((images, mask, targets), epoch_idx=0, batch_idx=0)
