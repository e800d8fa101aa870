"""The CPU demo: the paper's problem and its cure in a small world, end to end.

Stages (each cached in the demo folder; ``rebuild`` starts over):

1. ``world``: the small world (``demo/world.py``) in COCO panoptic format, and its splits'
   semantic labels (``densevlm_d2.data.datasets.panoptic_semantic``; the val split's are the
   segmentation evaluation's, the train split's a segmentation view for training);
2. ``student``: a small EVA02-CLIP trained contrastively on the image captions with upstream
   ``open_clip_train`` (the stand-in for EVA-CLIP: captions rarely name backgrounds);
3. ``teacher``: the same architecture trained with ``open_clip_train`` on region crops named by
   their thing or stuff class, then refined on the labelled boxes of all segments with RegionCLIP's
   region-text objective by ``tools/train_net.py`` and ``configs/demo/teacher.yaml`` (the stand-in
   for the paper's much stronger region-aware teacher, so it may use the world's labels);
4. ``clipself`` and ``densevlm``: the student fine-tuned by ``tools/train_net.py`` with
   ``configs/demo/{clipself,densevlm}.yaml``;
4b. ``map_student`` and ``map_densevlm``: another student family, a SigLIP-style CLIP (an
   attention-pooled ViT without a class token, trained on the captions with the sigmoid loss by
   ``open_clip_train --siglip``), and its DenseVLM fine-tuning from the same teacher
   (``configs/demo/densevlm_map.yaml``);
5. ``evaluate``: ``tools/train_net.py --eval-only`` on the val split for the six models: region
   accuracy (``configs/demo/eval.yaml``) and training-free segmentation
   (``configs/demo/sem_seg.yaml``);
6. ``draw``: the table, a bar chart and dense predictions before / after, as PNG files.

Every stage is seeded (the world's seed, ``open_clip_train --seed``, the configs' ``SEED``) and
runs with a fixed number of CPU threads, so two runs from fresh folders give the same table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["DemoConfig", "missing_requirements", "run_demo", "write_semantic_views"]

ROOT = Path(__file__).resolve().parents[1]
TRAIN_NET = ROOT / "tools" / "train_net.py"
# the world's datasets and the demo's model, registered in every train_net process
REGISTER = ROOT / "demo" / "register.py"
CONFIGS = ROOT / "configs" / "demo"
MODELS = ("student", "teacher", "clipself", "densevlm", "map_student", "map_densevlm")
#: the demo's two student families: the EVA02-CLIP (every model but those below) and a
#: SigLIP-style CLIP (an attention-pooled ViT without a class token, trained with the sigmoid loss)
EVA, MAP = "EVA02-Demo-16", "ViT-MAP-Demo-16"
ARCHITECTURES = {"map_student": MAP, "map_densevlm": MAP}


def architecture(name: str) -> str:
    """The open_clip model name of one of the demo's :data:`MODELS`."""
    return ARCHITECTURES.get(name, EVA)


# open_clip_train (stages 2 and 3) imports these, from open_clip's [training] extra; `make env`
# installs them, a cluster install from the wheelhouse (tools/wheelhouse.py) does not
TRAINING_MODULES = {"pandas": "pandas", "webdataset": "webdataset", "braceexpand": "braceexpand"}


def missing_requirements() -> list[str]:
    """The pip names of what the demo needs beyond densevlm_d2's own requirements and lacks here."""
    from importlib.util import find_spec

    return [pip for module, pip in TRAINING_MODULES.items() if find_spec(module) is None]


class DemoConfig:
    """Sizes of the demo (the defaults fit about 15 minutes on 2 CPU cores)."""

    def __init__(
        self,
        num_train: int = 1200,
        num_val: int = 200,
        student_epochs: int = 16,
        teacher_epochs: int = 2,
        finetune_iters: int | None = None,
        teacher_refine_iters: int | None = None,
        seed: int = 0,
        threads: int = 2,
    ):
        self.num_train, self.num_val = num_train, num_val
        self.student_epochs, self.teacher_epochs = student_epochs, teacher_epochs
        # None: the schedule of configs/demo/{clipself,densevlm,teacher}.yaml (SOLVER.MAX_ITER)
        self.finetune_iters, self.teacher_refine_iters = finetune_iters, teacher_refine_iters
        # the world's seed; training runs are seeded too (open_clip_train --seed, the configs' SEED)
        self.seed = seed
        # torch's CPU threads in every stage: results depend on the thread count (the order of
        # floating-point sums), so it is fixed for the table to be the same from run to run
        self.threads = threads


class _Stage:
    def __init__(self, total: int):
        self.total, self.index, self.start = total, 0, time.time()

    def __call__(self, title: str) -> None:
        self.index += 1
        print(
            f"\n[{self.index}/{self.total}] {title}   (elapsed {time.time() - self.start:.0f} s)",
            flush=True,
        )


def _run(
    cmd: list[str], log: Path, env: dict, keep=("eta:", "Train Epoch", "mean accuracy")
) -> None:
    """Run a command with its output in ``log``; show its progress lines as they come."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        pos = 0
        while proc.poll() is None:
            time.sleep(2)
            pos = _show(log, pos, keep)
        _show(log, pos, keep)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-25:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (log: {log}):\n" + "\n".join(tail))


_OPEN_CLIP_STEP = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/(\d+).*?Loss: ([\d.]+) \(([\d.]+)\)")


def _compact(line: str) -> str:
    """A progress line, shortened: open_clip_train's step lines to epoch, samples and loss."""
    step = _OPEN_CLIP_STEP.search(line)
    if step:
        epoch, seen, total, loss, mean = step.groups()
        return f"open_clip_train epoch {epoch}: {seen}/{total} samples, loss {loss} (mean {mean})"
    if "eta:" in line:
        return line[line.index("eta:") :].strip()
    return line.strip()[-150:]


def _show(log: Path, pos: int, keep) -> int:
    with open(log) as f:
        f.seek(pos)
        for line in f:
            if any(k in line for k in keep):
                print("    " + _compact(line), flush=True)
        return f.tell()


def _open_clip_train(
    csv: Path,
    name: str,
    epochs: int,
    out: Path,
    env: dict,
    log: Path,
    model: str = EVA,
    *extra: str,
) -> Path:
    """Train ``model`` from scratch on ``csv`` (image, caption) with upstream open_clip_train;
    ``extra``: more of its arguments (``--siglip``: the sigmoid loss)."""
    runs = out / "open_clip_train"
    shutil.rmtree(runs / name, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "demo.openclip_train",
        "--train-data",
        str(csv),
        "--dataset-type",
        "csv",
        "--csv-img-key",
        "filepath",
        "--csv-caption-key",
        "title",
        "--csv-separator",
        ",",
        "--model",
        model,
        "--batch-size",
        "64",
        "--epochs",
        str(epochs),
        "--lr",
        "5e-4",
        "--wd",
        "0.1",
        "--warmup",
        "20",
        "--workers",
        "1",
        "--logs",
        str(runs),
        "--name",
        name,
        "--save-frequency",
        str(epochs),
        "--report-to",
        "",
        "--precision",
        "fp32",
        "--seed",
        "0",
        "--log-every-n-steps",
        "10",
        *extra,
    ]
    _run(cmd, log, env)
    return runs / name / "checkpoints" / f"epoch_{epochs}.pt"


def _cached(path: Path) -> bool:
    """Whether a stage's output exists (then said, and the stage skipped)."""
    if path.exists():
        print("    cached:", path)
        return True
    return False


def _export(checkpoint: Path, target: Path, model: str = EVA) -> Path:
    """open_clip_train's checkpoint of ``model`` as a plain state dict: the EVA-CLIP release layout
    for the EVA02 model, open_clip's for the others."""
    import densevlm_d2

    from . import register  # noqa: F401  (the demo's models)

    clip = densevlm_d2.build_clip_model(model)
    densevlm_d2.load_checkpoint(clip, checkpoint)
    return densevlm_d2.save_checkpoint(clip, target, "eva_clip" if model == EVA else "open_clip")


def _schedule(iters: int | None) -> list[str]:
    """Overrides of a config's schedule (none for ``None``: the config's own)."""
    if iters is None:
        return []
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.WARMUP_ITERS", str(min(10, iters // 5))]


def _train_net(config: str, out_dir: Path, env: dict, log: Path, *opts: str) -> None:
    cmd = [
        sys.executable,
        str(TRAIN_NET),
        "--config-file",
        str(CONFIGS / config),
        "--register",
        str(REGISTER),
        *opts,
        "OUTPUT_DIR",
        str(out_dir),
    ]
    _run(cmd, log, env)


def evaluate(
    checkpoint: Path, out: Path, env: dict, logs: Path, name: str, model: str = EVA
) -> dict:
    """Region accuracy (configs/demo/eval.yaml) and training-free segmentation
    (configs/demo/sem_seg.yaml) of one checkpoint of ``model`` on the val split: one dict of
    metrics, the segmentation's as ``sem_seg.mIoU`` and ``sem_seg.pACC``."""
    weights = ("--eval-only", "MODEL.WEIGHTS", str(checkpoint), "MODEL.CLIP.MODEL_NAME", model)
    _train_net("eval.yaml", out, env, logs / f"eval_{name}.log", *weights)
    inference = out / "inference"
    metrics = json.loads((inference / "densevlm_demo_world_val" / "region_macc.json").read_text())
    metrics = dict(metrics["metrics"])
    seg_out = out.with_name(out.name + "_sem_seg")
    _train_net("sem_seg.yaml", seg_out, env, logs / f"sem_seg_{name}.log", *weights)
    seg = json.loads(
        (
            seg_out / "inference" / "densevlm_demo_world_val_sem_seg" / "sem_seg_metrics.json"
        ).read_text()
    )
    metrics.update({f"sem_seg.{k}": seg[k] for k in ("mIoU", "pACC")})
    print(f"    segmentation: mIoU {seg['mIoU']:.1f} %, pixel accuracy {seg['pACC']:.1f} %")
    return metrics


def write_semantic_views(world: Path) -> list[Path]:
    """Write ``sem_seg_{train,val}/`` of the world from its panoptic annotations (the labels of
    ``densevlm_demo_world_{train,val}_sem_seg``); a folder with a ``.done`` marker is kept as it
    is, so an interrupted run redoes only what is unfinished. Returns the two folders."""
    from densevlm_d2.data.datasets.panoptic_semantic import panoptic_to_semantic

    folders = []
    for split in ("train", "val"):
        out = world / f"sem_seg_{split}"
        if not (out / ".done").exists():
            panoptic_to_semantic(world / f"panoptic_{split}.json", world / f"panoptic_{split}", out)
            (out / ".done").touch()
        folders.append(out)
    return folders


def _caption_student(name, model, cfg, demo, world, models, env, logs, *extra) -> None:
    """``models/<name>.pt``: ``model`` trained on the world's captions by open_clip_train (its
    ``extra`` arguments), unless cached."""
    if not _cached(models / f"{name}.pt"):
        ckpt = _open_clip_train(
            world / "captions_train.csv",
            name,
            cfg.student_epochs,
            demo,
            env,
            logs / f"{name}.log",
            model,
            *extra,
        )
        _export(ckpt, models / f"{name}.pt", model)


def _map_family(cfg, demo, world, models, runs, logs, env, stage) -> None:
    """Stages 6 and 7: the same method on another student family, a SigLIP-style CLIP (an
    attention-pooled ViT without a class token, sigmoid loss) trained on the same captions, then
    distilled from the same teacher (``configs/demo/densevlm_map.yaml``)."""
    stage("SigLIP-style student: an attention-pooled ViT trained on the captions, sigmoid loss")
    _caption_student("map_student", MAP, cfg, demo, world, models, env, logs, "--siglip")
    stage("DenseVLM on the SigLIP-style student, the same teacher (tools/train_net.py)")
    if not _cached(models / "map_densevlm.pt"):
        opts = [
            "MODEL.CLIP.CHECKPOINT",
            str(models / "map_student.pt"),
            "MODEL.DENSEVLM.TEACHER.CHECKPOINT",
            str(models / "teacher.pt"),
            *_schedule(cfg.finetune_iters),
            "DATASETS.TEST",
            "()",
        ]
        out = runs / "map_densevlm"
        _train_net("densevlm_map.yaml", out, env, logs / "map_densevlm.log", *opts)
        shutil.copy(out / "clip_final_open_clip.pt", models / "map_densevlm.pt")


def run_demo(
    demo_dir: str | os.PathLike = "output/demo",
    cfg: DemoConfig | None = None,
    rebuild: bool = False,
) -> dict:
    """Run (or reuse) every stage; returns the table and the paths of the pictures."""
    from .world import WorldSpec, write_world

    missing = missing_requirements()
    if missing:
        raise RuntimeError(
            "the demo trains its CLIPs with open_clip_train, which needs "
            f"{', '.join(missing)}: pip install {' '.join(missing)} (make env installs them)"
        )
    cfg = cfg or DemoConfig()
    demo = Path(demo_dir).resolve()
    if rebuild:
        shutil.rmtree(demo, ignore_errors=True)
    data_root, models, runs, logs = demo / "datasets", demo / "models", demo / "runs", demo / "logs"
    for d in (data_root, models, runs, logs):
        d.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        DETECTRON2_DATASETS=str(data_root),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        OMP_NUM_THREADS=str(cfg.threads),
        MKL_NUM_THREADS=str(cfg.threads),
    )
    env.setdefault("DENSEVLM_CACHE", str(demo / "cache"))
    stage = _Stage(9)
    world = data_root / "demo_world"

    stage("the world: scenes, panoptic annotations, captions, segmentation labels")
    if not (world / "panoptic_val.json").exists():
        write_world(
            str(world), WorldSpec(seed=cfg.seed, num_train=cfg.num_train, num_val=cfg.num_val)
        )
    else:
        print("    cached:", world)
    write_semantic_views(world)

    stage("student: a small EVA02-CLIP trained on the captions with open_clip_train")
    _caption_student("student", EVA, cfg, demo, world, models, env, logs)

    stage("teacher: the same CLIP trained on named region crops, then on labelled regions")
    if not _cached(models / "teacher.pt"):
        if not _cached(models / "teacher_crops.pt"):
            ckpt = _open_clip_train(
                world / "crops_train.csv",
                "teacher_crops",
                cfg.teacher_epochs,
                demo,
                env,
                logs / "teacher_crops.log",
            )
            _export(ckpt, models / "teacher_crops.pt")
        _train_net(
            "teacher.yaml",
            runs / "teacher",
            env,
            logs / "teacher_regions.log",
            "MODEL.CLIP.CHECKPOINT",
            str(models / "teacher_crops.pt"),
            *_schedule(cfg.teacher_refine_iters),
        )
        shutil.copy(runs / "teacher" / "clip_final_eva_clip.pt", models / "teacher.pt")

    for name, title in (
        ("clipself", "CLIPSelf: the student aligned with its own crop embeddings"),
        ("densevlm", "DenseVLM: the student distilled from the teacher's labels"),
    ):
        stage(title + " (tools/train_net.py)")
        if not _cached(models / f"{name}.pt"):
            opts = [
                "MODEL.CLIP.CHECKPOINT",
                str(models / "student.pt"),
                *_schedule(cfg.finetune_iters),
                "DATASETS.TEST",
                "()",
            ]
            if name == "densevlm":
                opts += ["MODEL.DENSEVLM.TEACHER.CHECKPOINT", str(models / "teacher.pt")]
            _train_net(f"{name}.yaml", runs / name, env, logs / f"{name}.log", *opts)
            shutil.copy(runs / name / "clip_final_eva_clip.pt", models / f"{name}.pt")

    _map_family(cfg, demo, world, models, runs, logs, env, stage)

    stage("evaluation of the six models on the val split (tools/train_net.py --eval-only)")
    table = {}
    for name in MODELS:
        table[name] = evaluate(
            models / f"{name}.pt", runs / f"eval_{name}", env, logs, name, architecture(name)
        )
    (demo / "results.json").write_text(json.dumps(table, indent=1))

    stage("pictures: bar chart and dense predictions before / after")
    from .figures import bar_chart, dense_predictions, format_table

    print(format_table(table))
    chart = bar_chart(table, demo / "region_accuracy.png")
    pictures = dense_predictions(models, world, demo, env)
    print(
        f"\ndone in {time.time() - stage.start:.0f} s. Pictures:\n  {chart}\n  "
        + "\n  ".join(str(p) for p in pictures)
    )
    return {"table": table, "chart": chart, "pictures": pictures}
