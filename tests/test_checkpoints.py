"""Checkpoint folders are complete only when `deformable_detr.json`, written last, lists every other file
with its size and SHA-256; readers refuse others naming the folder and the file; --resume picks the latest
complete checkpoint from metadata.json and unpickles nothing."""

import json
import os
import pickle
import random

import pytest
import torch

from deformable_detr.inference.checkpoint_files import (
    METADATA_FILE,
    IncompleteCheckpointError,
    latest_complete_checkpoint,
    steps_completed,
    verify_checkpoint,
    write_checkpoint_metadata,
)
from deformable_detr.inference.loading import load_for_inference, read_trial_weights


class WritesMarker:
    """A pickle that, when loaded, creates a file: what a hostile trial_state.pkl could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_checkpoint(folder, steps: int, marker: str | None = None, complete: bool = True) -> str:
    """A checkpoint folder as Determined and the trial write it (the weights file is a stand-in)."""
    os.makedirs(folder)
    (folder / "state_dict.pth").write_bytes(random.Random(steps).randbytes(4096))
    payload = WritesMarker(marker) if marker else {"batches_trained": steps}
    (folder / "trial_state.pkl").write_bytes(pickle.dumps(payload))
    (folder / "load_data.json").write_text("{}")
    (folder / "metadata.json").write_text(json.dumps({"steps_completed": steps, "format": "pickle"}))
    if complete:
        write_checkpoint_metadata(str(folder), {"hparams": {}, "data": {}})
    return str(folder)


def test_complete_checkpoint_lists_every_other_file(tmp_path):
    folder = make_checkpoint(tmp_path / "a", steps=4)
    files = verify_checkpoint(folder)["files"]
    assert sorted(files) == ["load_data.json", "metadata.json", "state_dict.pth", "trial_state.pkl"]
    assert files["state_dict.pth"]["size"] == 4096 and len(files["state_dict.pth"]["sha256"]) == 64
    assert os.listdir(folder).count("deformable_detr.json") == 1  # no temporary left behind


def test_checkpoint_without_its_last_file_is_incomplete(tmp_path):
    folder = make_checkpoint(tmp_path / "a", steps=4, complete=False)
    with pytest.raises(IncompleteCheckpointError, match=r"'.*a' is incomplete: deformable_detr.json.*missing"):
        verify_checkpoint(folder)


def test_truncated_weights_are_named_with_their_size(tmp_path):
    folder = make_checkpoint(tmp_path / "a", steps=4)
    with open(os.path.join(folder, "state_dict.pth"), "r+b") as f:
        f.truncate(1000)
    with pytest.raises(IncompleteCheckpointError, match=r"a' is corrupt: state_dict.pth has 1000 bytes, 4096"):
        verify_checkpoint(folder)


def test_changed_file_fails_its_checksum(tmp_path):
    folder = make_checkpoint(tmp_path / "a", steps=4)
    with open(os.path.join(folder, "trial_state.pkl"), "r+b") as f:
        f.write(b"\x00")
    with pytest.raises(IncompleteCheckpointError, match="trial_state.pkl does not match its SHA-256"):
        verify_checkpoint(folder)


def test_missing_listed_file_is_named(tmp_path):
    folder = make_checkpoint(tmp_path / "a", steps=4)
    os.remove(os.path.join(folder, "load_data.json"))
    with pytest.raises(IncompleteCheckpointError, match="is incomplete: load_data.json is missing"):
        verify_checkpoint(folder)


def test_parent_folder_resumes_from_the_latest_complete_checkpoint(tmp_path, caplog):
    storage = tmp_path / "ckpt" / "determined"
    make_checkpoint(storage / "one", steps=2)
    latest = make_checkpoint(storage / "two", steps=4)
    make_checkpoint(storage / "three", steps=6, complete=False)  # killed while writing
    for parent in (tmp_path / "ckpt", storage):
        assert latest_complete_checkpoint(str(parent)) == latest
    assert "three" in caplog.text and "incomplete" in caplog.text  # the skipped one is named


def test_one_incomplete_checkpoint_given_directly_is_refused(tmp_path):
    folder = make_checkpoint(tmp_path / "determined" / "x", steps=6, complete=False)
    with pytest.raises(IncompleteCheckpointError, match="deformable_detr.json"):
        latest_complete_checkpoint(folder)


def test_parent_without_complete_checkpoint_names_every_problem(tmp_path):
    make_checkpoint(tmp_path / "determined" / "x", steps=6, complete=False)
    with pytest.raises(IncompleteCheckpointError, match=r"no complete checkpoint in .*/x' is incomplete"):
        latest_complete_checkpoint(str(tmp_path))


def test_resume_reads_the_step_from_metadata_json_without_unpickling(tmp_path):
    marker = tmp_path / "code_ran"
    folder = make_checkpoint(tmp_path / "determined" / "hostile", steps=6, marker=str(marker))
    assert latest_complete_checkpoint(str(tmp_path)) == folder
    assert steps_completed(folder) == 6
    assert not marker.exists()
    # the hostile pickle really runs code when unpickled
    with open(os.path.join(folder, "trial_state.pkl"), "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("seed", range(20))
def test_weights_file_of_arbitrary_bytes_is_named_when_loaded(tmp_path, seed):
    # torch's legacy unpickler fails on arbitrary bytes with errors of any type (KeyError, ValueError, ...)
    folder = make_checkpoint(tmp_path / "a", steps=seed)
    with pytest.raises(IncompleteCheckpointError, match=r"a': cannot read state_dict.pth: not a zip archive"):
        read_trial_weights(folder)


def test_cut_torch_weights_file_is_named_when_loaded(tmp_path):
    folder = make_checkpoint(tmp_path / "a", steps=4)
    weights = os.path.join(folder, "state_dict.pth")
    torch.save({"models_state_dict": [{"weight": torch.ones(1000)}]}, weights)
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(IncompleteCheckpointError, match=r"a': cannot read state_dict.pth"):
        read_trial_weights(folder)


def test_inference_refuses_an_incomplete_checkpoint_naming_it(tmp_path):
    folder = make_checkpoint(tmp_path / "a", steps=4)
    os.remove(os.path.join(folder, "state_dict.pth"))
    with pytest.raises(IncompleteCheckpointError, match="a' is incomplete: state_dict.pth is missing"):
        load_for_inference(folder)


def test_inference_reads_weights_only_and_runs_no_code_from_a_checkpoint(tmp_path):
    marker = tmp_path / "code_ran"
    folder = tmp_path / "hostile"
    make_checkpoint(folder, steps=4, complete=False)
    torch.save({"models_state_dict": [{"weight": WritesMarker(str(marker))}]}, folder / "state_dict.pth")
    write_checkpoint_metadata(str(folder), {"hparams": {}, "data": {}, "label_to_cat_id": None,
                                            "category_names": {}})
    with pytest.raises(IncompleteCheckpointError, match=r"hostile': cannot read state_dict.pth: Weights only"):
        load_for_inference(str(folder))
    assert not marker.exists()


def test_checkpoint_written_before_file_lists_still_loads_with_a_warning(tmp_path, caplog):
    folder = make_checkpoint(tmp_path / "old", steps=5, complete=False)
    with open(os.path.join(folder, METADATA_FILE), "w") as f:
        json.dump({"hparams": {}, "data": {}}, f)  # the metadata file as earlier versions wrote it
    assert verify_checkpoint(folder) == {"hparams": {}, "data": {}}
    assert "earlier version" in caplog.text and "cannot be checked" in caplog.text
    assert latest_complete_checkpoint(str(tmp_path)) == folder
