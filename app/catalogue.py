"""The models the app offers, found on this machine (never typed into the page), and loaded once.

Three sources, in this order:

* the demo's checkpoints (``make demo`` writes ``<demo dir>/models/{student,clipself,densevlm,
  teacher}.pt``): the small demo CLIP (registered by ``demo/register.py``) with the demo's
  training-free protocol (``configs/demo/sem_seg.yaml``);
* model-zoo entries already in the local hub cache (nothing is downloaded), with SCLIP's protocol
  (``configs/sem_seg/Base-DenseSeg.yaml``);
* files in the configured models folder (``--models-dir``): ``*.pt``, ``*.pth``, ``*.bin``,
  ``*.safetensors``; the architecture is ``--models-arch`` unless a ``<file>.json`` beside it says
  ``{"model": "<architecture>"}``; plus CAT-Seg models given as ``--cat-seg CONFIG WEIGHTS``.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from demo.pipeline import architecture as demo_architecture
from densevlm_d2.predictor import OpenVocabPredictor

__all__ = ["DEMO_MODELS", "ROOT", "Catalogue", "ModelChoice", "register_files"]

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo" / "sem_seg.yaml"
DEMO_REGISTER = ROOT / "demo" / "register.py"
SCLIP_CONFIG = ROOT / "configs" / "sem_seg" / "Base-DenseSeg.yaml"
#: the demo's checkpoints and their labels, in the order the app lists them
DEMO_MODELS = {
    "densevlm": "demo: DenseVLM",
    "student": "demo: pretrained student",
    "clipself": "demo: CLIPSelf",
    "teacher": "demo: teacher",
    "map_densevlm": "demo: SigLIP-style + DenseVLM",
    "map_student": "demo: SigLIP-style student",
}
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model menu: how to build its predictor."""

    label: str
    config: Path
    checkpoint: str = ""  # the CLIP's weights (MODEL.CLIP.CHECKPOINT)
    weights: str = ""  # a detectron2 checkpoint of the whole model (MODEL.WEIGHTS: CAT-Seg)
    opts: tuple[str, ...] = ()
    register: tuple[Path, ...] = ()
    kind: str = "training-free"  # or "CAT-Seg"


@dataclass
class Catalogue:
    """The menu of :class:`ModelChoice` and a small cache of loaded predictors."""

    choices: dict[str, ModelChoice]
    device: str = "cpu"
    keep: int = 4
    _loaded: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def discover(
        cls,
        demo_dir: str | Path | None = "output/demo",
        models_dir: str | Path | None = None,
        models_arch: str = "EVA02-CLIP-B-16",
        cat_seg: list[tuple[str, str]] = (),
        device: str = "cpu",
        zoo: bool = True,
    ) -> Catalogue:
        choices: dict[str, ModelChoice] = {}
        if demo_dir:
            models = Path(demo_dir) / "models"
            for stem, label in DEMO_MODELS.items():
                if (models / f"{stem}.pt").is_file():
                    choices[label] = ModelChoice(
                        label,
                        DEMO_CONFIG,
                        str(models / f"{stem}.pt"),
                        opts=("MODEL.CLIP.MODEL_NAME", demo_architecture(stem)),
                        register=(DEMO_REGISTER,),
                    )
        if zoo:
            for label, choice in _cached_zoo_entries().items():
                choices[label] = choice
        if models_dir:
            folder = Path(models_dir)
            if not folder.is_dir():
                raise FileNotFoundError(f"--models-dir {folder}: no such folder")
            for path in sorted(folder.iterdir()):
                if path.suffix in WEIGHT_SUFFIXES and path.is_file():
                    arch = _sidecar_arch(path) or models_arch
                    label = f"file: {path.name} ({arch})"
                    opts = ("MODEL.CLIP.MODEL_NAME", arch)
                    choices[label] = ModelChoice(label, SCLIP_CONFIG, str(path), opts=opts)
        for config, weights in cat_seg:
            for p, what in ((config, "config"), (weights, "weights")):
                if not Path(p).is_file():
                    raise FileNotFoundError(f"--cat-seg: the {what} file {p} does not exist")
            label = f"CAT-Seg: {Path(weights).name}"
            register = (DEMO_REGISTER,) if "demo" in Path(config).parts else ()
            choices[label] = ModelChoice(
                label, Path(config), weights=str(weights), register=register, kind="CAT-Seg"
            )
        return cls(choices, device=device)

    @property
    def labels(self) -> list[str]:
        return list(self.choices)

    def default_pair(self) -> tuple[str | None, str | None]:
        """The side-by-side default: the pretrained student vs DenseVLM when the demo's are here."""
        labels = self.labels
        a = DEMO_MODELS["student"] if DEMO_MODELS["student"] in self.choices else None
        b = DEMO_MODELS["densevlm"] if DEMO_MODELS["densevlm"] in self.choices else None
        first = labels[0] if labels else None
        second = labels[1] if len(labels) > 1 else first
        return a or second, b or first

    def is_loaded(self, label: str) -> bool:
        return label in self._loaded

    def get(
        self, label: str, report: Callable[[str], None] = lambda message: None
    ) -> tuple[OpenVocabPredictor, float]:
        """The predictor of a menu entry (built once, then cached) and the seconds its loading
        took now (0 when cached)."""
        if label not in self.choices:
            raise KeyError(f"no model {label!r} in this app; models: {', '.join(self.choices)}")
        with self._lock:
            if label in self._loaded:
                self._loaded.move_to_end(label)
                return self._loaded[label], 0.0
            choice = self.choices[label]
            report(f"loading {label}")
            t0 = time.perf_counter()
            register_files(choice.register)
            predictor = OpenVocabPredictor.from_config(
                choice.config,
                checkpoint=choice.checkpoint or None,
                weights=choice.weights or None,
                opts=choice.opts,
                device=self.device,
                name=label,
            )
            self._loaded[label] = predictor
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            return predictor, time.perf_counter() - t0


_REGISTERED: set[Path] = set()


def register_files(files) -> None:
    """Run each registration file once per process (``--register`` files, ``demo/register.py``)."""
    from densevlm_d2.utils.registration import run_register_files

    for path in (Path(f).resolve() for f in files):
        if path in _REGISTERED:
            continue
        if (
            path == DEMO_REGISTER.resolve()
        ):  # a module of this repository: imported once, as tests do
            importlib.import_module("demo.register")
        else:
            run_register_files([str(path)])
        _REGISTERED.add(path)


def _sidecar_arch(path: Path) -> str | None:
    side = path.with_name(path.name + ".json")
    if not side.is_file():
        return None
    try:
        return str(json.loads(side.read_text())["model"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f'{side}: expected {{"model": "<architecture>"}} ({e})') from None


def _cached_zoo_entries() -> dict[str, ModelChoice]:
    """Model-zoo entries whose file is in the local hub cache (nothing is downloaded)."""
    from densevlm_d2.clip.hub import MODEL_ZOO, is_cached

    out = {}
    for name, entry in MODEL_ZOO.items():
        try:
            path = is_cached(entry)
        except Exception as e:  # a broken cache must not stop the app
            logger.warning("model zoo %s: cache not readable (%s)", name, e)
            continue
        if path is not None:
            label = f"zoo: {name}"
            opts = ("MODEL.CLIP.MODEL_NAME", entry.model)
            out[label] = ModelChoice(label, SCLIP_CONFIG, str(path), opts=opts)
    return out
