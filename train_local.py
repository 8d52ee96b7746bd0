"""The main job (`make train`): train a small Deformable DETR on synthetic shapes on this machine's CPU.

It generates the synthetic COCO-format dataset when absent, trains `cpu_synthetic.yaml` through the same
trial class and Determined `Trainer` as a cluster run (validating with COCO mAP on the way and
checkpointing), by default with two worker processes (torchrun, gloo) of one thread each, then writes into a
new folder for each run, `outputs/train/<date-time>/` (with
`outputs/train/latest` pointing at it, or `outputs/train/LATEST` naming it where symlinks are unavailable),
or into `--output DIR` when DIR is new or empty; nothing already there is deleted:
    <output>/curves.png        training losses and validation mAP against the batch number
    <output>/predictions.png   validation images: ground truth (left) beside the predictions (right)
    <output>/metrics.jsonl     every training and validation report
    <output>/checkpoints/      Determined checkpoints (usable with predict.py)
and prints `final bbox mAP: <value>`.
"""

import argparse
import concurrent.futures
import json
import logging
import os
import subprocess
import sys
import time

import torch
import yaml

import model_def
import ops
from deformable_detr.data import paths, synthetic
from deformable_detr.data.categories import category_ids, category_names
from deformable_detr.data.coco import load_coco
from deformable_detr.data.images import read_image
from deformable_detr.inference.checkpoint_files import latest_complete_checkpoint
from deformable_detr.inference.loading import load_for_inference
from deformable_detr.inference.visualize import draw_boxes, plot_curves, save_side_by_side

DEFAULT_CONFIG = "cpu_synthetic.yaml"
RUNS_ROOT = os.path.join("outputs", "train")
LATEST = "latest"  # a symlink to the newest run folder
LATEST_FILE = "LATEST"  # names the newest run folder where symlinks cannot be made
SHOWN_IMAGES = 6
SHOWN_SCORE = 0.3  # lowest score drawn in predictions.png


def ensure_dataset(data_dir: str, train_images: int, val_images: int, image_size: int) -> None:
    """Generate the synthetic dataset unless a complete one is there (the val annotations come last)."""
    if os.path.isfile(paths.annotation_file(data_dir, "val")):
        return
    print(f"generating the synthetic dataset in {data_dir} ({train_images} train, {val_images} val images)")
    synthetic.main(
        ["--out", data_dir, "--train", str(train_images), "--val", str(val_images), "--size", str(image_size)]
    )


def new_run_folder(root: str = RUNS_ROOT) -> str:
    """A new folder `root/<date-time>` (suffixed -2, -3.. when taken), with `root/latest` pointing at it.
    Nothing already under `root` is changed, except what `latest` points at."""
    os.makedirs(root, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        name = stamp if attempt == 1 else f"{stamp}-{attempt}"
        try:
            os.mkdir(os.path.join(root, name))
            break
        except FileExistsError:
            continue
    else:
        raise RuntimeError(f"no free run folder name for {stamp} in {root}")
    _point_latest_at(root, name)
    return os.path.join(root, name)


def _point_latest_at(root: str, name: str) -> None:
    """`root/latest` -> `name` (replaced in one step); where symlinks cannot be made, `root/LATEST` names it."""
    temporary = os.path.join(root, f".{LATEST}.{os.getpid()}")
    try:
        os.symlink(name, temporary, target_is_directory=True)
        os.replace(temporary, os.path.join(root, LATEST))
    except (OSError, NotImplementedError) as error:
        logging.getLogger("train_local").warning(
            "cannot point the symlink %s at %s (%s); %s names the newest run instead",
            os.path.join(root, LATEST), name, error, os.path.join(root, LATEST_FILE),
        )
        with open(temporary, "w") as f:
            f.write(name + "\n")
        os.replace(temporary, os.path.join(root, LATEST_FILE))


def prepare_output(output: str | None) -> str:
    """The run's output folder: a new one under outputs/train, or `output`, which must be new or empty."""
    if output is None:
        return new_run_folder()
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        kind = "a folder that is not empty" if os.path.isdir(output) else "a file"
        raise FileExistsError(
            f"--output {output!r} is {kind}; give a new or empty folder, or leave --output out for a new "
            f"folder under {RUNS_ROOT} (nothing there is deleted)"
        )
    os.makedirs(output, exist_ok=True)
    return output


def draw_predictions(
    checkpoint: str, data_dir: str, path: str, count: int = SHOWN_IMAGES, min_score: float = SHOWN_SCORE
) -> None:
    """Validation images with their ground truth beside the model's detections (score >= min_score)."""
    loaded = load_for_inference(checkpoint)
    coco = load_coco(paths.annotation_file(data_dir, "val"))
    names = category_names(coco)
    pairs = []
    for image_id in sorted(coco.getImgIds())[:count]:
        file_name = coco.loadImgs(image_id)[0]["file_name"]
        image = read_image(os.path.join(data_dir, paths.image_folder("val"), file_name))
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        truth_boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)])
        truth = draw_boxes(image, truth_boxes.reshape(-1, 4), [a["category_id"] for a in annotations], names)
        (found,) = loaded.detect([image])
        keep = found["scores"] >= min_score
        labels = category_ids(found["labels"][keep].numpy(), loaded.label_to_cat_id).tolist()
        predicted = draw_boxes(image, found["boxes"][keep], labels, names, found["scores"][keep].tolist())
        pairs.append((truth, predicted))
    save_side_by_side(pairs, path, columns=2)


def train(run_args: list[str], workers: int) -> None:
    """model_def.main in this process (one worker), or `workers` processes under torchrun that share the machine's
    cores (the global batch is split between them; gradients are averaged over gloo)."""
    if workers == 1:
        model_def.main(run_args)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}",
               os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_def.py"), *run_args]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if result.returncode != 0:
        raise SystemExit(f"training failed (exit status {result.returncode}); its log is above")


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--output", help=f"a new or empty folder (default: a new folder under {RUNS_ROOT})")
    parser.add_argument("--max-batches", type=model_def.positive_int, help="a shorter run (for a quick check)")
    parser.add_argument(
        "--train-images", type=model_def.positive_int, default=2000, help="size of a generated training set"
    )
    parser.add_argument(
        "--val-images", type=model_def.positive_int, default=200, help="size of a generated validation set"
    )
    parser.add_argument("--image-size", type=model_def.positive_int, default=256, help="side of the generated images")
    parser.add_argument(
        "--workers", type=model_def.positive_int, default=2,
        help="training processes, each with cores / workers threads (default 2: on a 2-core CPU, two one-thread "
             "workers train faster than one process with two threads, and a busy core slows them less)",
    )
    args = parser.parse_args(argv)
    try:
        args.output = prepare_output(args.output)  # before anything runs
    except FileExistsError as error:
        parser.error(str(error))
    start = time.monotonic()

    with open(args.config) as f:
        data_dir = yaml.safe_load(f)["data"]["data_dir"]
    # The kernel's first build (ninja's compilers) overlaps the dataset's generation (this process).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        kernel = pool.submit(ops.kernel_available)
        ensure_dataset(data_dir, args.train_images, args.val_images, args.image_size)
        kernel.result()  # the build's error, if any, is raised here

    checkpoints = os.path.join(args.output, "checkpoints")
    metrics_file = os.path.join(args.output, "metrics.jsonl")
    run_args = [args.config, "--checkpoint-dir", checkpoints, "--metrics-file", metrics_file]
    if args.max_batches is not None:
        run_args += ["--max-batches", str(args.max_batches)]
    train(run_args, args.workers)

    with open(metrics_file) as f:
        records = [json.loads(line) for line in f]
    validations = [r for r in records if r["kind"] == "validation"]
    if not validations:
        raise RuntimeError("the run reported no validation; check validation_period in the config")
    plot_curves(records, os.path.join(args.output, "curves.png"))
    checkpoint = latest_complete_checkpoint(checkpoints)
    draw_predictions(checkpoint, data_dir, os.path.join(args.output, "predictions.png"))

    final_map = validations[-1]["mAP"]
    print(f"wall time: {time.monotonic() - start:.0f} s (including the set-up of this run)")
    print(f"curves: {os.path.join(args.output, 'curves.png')}")
    print(f"predictions: {os.path.join(args.output, 'predictions.png')} (detections scoring >= {SHOWN_SCORE})")
    print(f"checkpoint: {checkpoint}")
    print(f"final bbox mAP: {final_map:.4f}")
    return final_map


if __name__ == "__main__":
    main(sys.argv[1:])
