"""Which checkpoint folders are complete.

The trial writes `deformable_detr.json` last into each checkpoint folder (see
`deformable_detr.training.checkpoints`): beside the settings a checkpoint needs to be used on its own, it lists
every other file of the folder with its size and SHA-256. A folder is complete when that file is there and
every file it lists matches; a run killed while writing a checkpoint leaves a folder without it (or with a
file that does not match), which every reader here refuses by name.

Nothing here unpickles: the files read are JSON.
"""

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("deformable_detr")

# The file the trial writes last into every checkpoint folder.
METADATA_FILE = "deformable_detr.json"
# The file list inside it: {relative path: {"size": bytes, "sha256": hex digest}}.
FILES_KEY = "files"
# Written by Determined into every checkpoint: {"steps_completed": batches trained, ...}.
DETERMINED_METADATA_FILE = "metadata.json"
# Any of these makes a folder a checkpoint folder (rather than a folder of checkpoints).
CHECKPOINT_MARKERS = (METADATA_FILE, DETERMINED_METADATA_FILE, "state_dict.pth", "trial_state.pkl", "load_data.json")
_TEMP_SUFFIX = ".partial"
_CHUNK = 1 << 20


class IncompleteCheckpointError(ValueError):
    """A checkpoint folder that was not completely written, or whose files changed since; the message names
    the folder and the file."""


def file_digest(path: str) -> dict[str, Any]:
    """{"size": bytes, "sha256": hex digest} of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return {"size": os.path.getsize(path), "sha256": digest.hexdigest()}


def _listed_files(folder: str) -> list[str]:
    """Every file under `folder` (relative, '/'-separated) except the metadata file and its temporary."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if relative not in (METADATA_FILE, METADATA_FILE + _TEMP_SUFFIX):
                found.append(relative)
    return sorted(found)


def write_checkpoint_metadata(folder: str, metadata: Mapping[str, Any]) -> str:
    """Write `metadata` plus the list of every other file in `folder` (size, SHA-256) to `folder/deformable_detr.json`.

    The file appears whole or not at all (written beside, flushed to disk, then renamed), so its presence
    marks the folder complete. Returns its path.
    """
    files = {relative: file_digest(os.path.join(folder, relative)) for relative in _listed_files(folder)}
    path = os.path.join(folder, METADATA_FILE)
    temporary = path + _TEMP_SUFFIX
    with open(temporary, "w") as f:
        json.dump({**metadata, FILES_KEY: files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    return path


def is_checkpoint_folder(path: str) -> bool:
    """Whether `path` is one checkpoint folder (complete or not) rather than a folder holding checkpoints."""
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, name)) for name in CHECKPOINT_MARKERS)


def verify_checkpoint(folder: str) -> dict[str, Any]:
    """The metadata of a complete checkpoint folder; IncompleteCheckpointError naming the folder and the file
    that is missing, cut short or changed otherwise."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no checkpoint folder at {folder!r}")
    path = os.path.join(folder, METADATA_FILE)
    if not os.path.isfile(path):
        raise IncompleteCheckpointError(
            f"checkpoint {folder!r} is incomplete: {METADATA_FILE}, written last, is missing "
            "(the run stopped while writing it, or it is not a checkpoint of this package)"
        )
    try:
        with open(path) as f:
            metadata = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IncompleteCheckpointError(
            f"checkpoint {folder!r}: {METADATA_FILE} is not valid JSON ({error})"
        ) from error
    if not isinstance(metadata, dict):
        raise IncompleteCheckpointError(f"checkpoint {folder!r}: {METADATA_FILE} does not hold a JSON object")
    if FILES_KEY not in metadata:
        # Written before checkpoints listed their files: still loadable, but nothing can be verified.
        logger.warning(
            "checkpoint %r was written by an earlier version of this package, without a file list in %s: "
            "its files cannot be checked for completeness", folder, METADATA_FILE,
        )
        return metadata
    files = metadata[FILES_KEY]
    if not isinstance(files, dict) or not files:
        raise IncompleteCheckpointError(
            f"checkpoint {folder!r}: {METADATA_FILE} has no '{FILES_KEY}' list, so the folder cannot be checked"
        )
    for relative, expected in sorted(files.items()):
        file_path = os.path.join(folder, *relative.split("/"))
        if not os.path.isfile(file_path):
            raise IncompleteCheckpointError(f"checkpoint {folder!r} is incomplete: {relative} is missing")
        size = os.path.getsize(file_path)
        if size != expected.get("size"):
            raise IncompleteCheckpointError(
                f"checkpoint {folder!r} is corrupt: {relative} has {size} bytes, {expected.get('size')} were written"
            )
        if file_digest(file_path)["sha256"] != expected.get("sha256"):
            raise IncompleteCheckpointError(
                f"checkpoint {folder!r} is corrupt: {relative} does not match its SHA-256 checksum"
            )
    return metadata


def steps_completed(folder: str) -> int:
    """Training batches done when the checkpoint was written, from Determined's `metadata.json` (JSON: no
    code runs when it is read)."""
    path = os.path.join(folder, DETERMINED_METADATA_FILE)
    try:
        with open(path) as f:
            steps = json.load(f)["steps_completed"]
    except FileNotFoundError as error:
        raise IncompleteCheckpointError(f"checkpoint {folder!r}: {DETERMINED_METADATA_FILE} is missing") from error
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise IncompleteCheckpointError(
            f"checkpoint {folder!r}: {DETERMINED_METADATA_FILE} holds no 'steps_completed' ({error!r})"
        ) from error
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise IncompleteCheckpointError(
            f"checkpoint {folder!r}: 'steps_completed' in {DETERMINED_METADATA_FILE} is {steps!r}, not a count"
        )
    return steps


def latest_complete_checkpoint(path: str) -> str:
    """The checkpoint to continue from: `path` itself when it is a checkpoint folder (which must be
    complete), else the complete checkpoint with the most batches done among the folders in `path` or in
    `path/determined` (a run's checkpoint folder). Incomplete ones are skipped with a warning naming them.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint or folder of checkpoints at {path!r}")
    if is_checkpoint_folder(path):
        verify_checkpoint(path)
        steps_completed(path)
        return path
    parents = [path] + ([os.path.join(path, "determined")] if os.path.isdir(os.path.join(path, "determined")) else [])
    candidates = sorted(
        os.path.join(parent, name)
        for parent in parents
        for name in os.listdir(parent)
        if is_checkpoint_folder(os.path.join(parent, name))
    )
    if not candidates:
        where = f"{path!r}" + (" or its determined/" if len(parents) > 1 else "")
        raise FileNotFoundError(f"no checkpoint folders in {where}")
    complete: list[tuple[int, float, str]] = []
    problems = []
    for folder in candidates:
        try:
            verify_checkpoint(folder)
            complete.append((steps_completed(folder), os.path.getmtime(os.path.join(folder, METADATA_FILE)), folder))
        except IncompleteCheckpointError as error:
            problems.append(str(error))
            logger.warning("skipping %s", error)
    if not complete:
        raise IncompleteCheckpointError(f"no complete checkpoint in {path!r}: " + "; ".join(problems))
    return max(complete)[2]
