"""Published weights by name: ``hf://`` references and the model zoo, resolved through the Hugging
Face hub cache.

A weight reference is any of

* a local path;
* ``hf://<org>/<repo>/<path/in/repo>[@<revision>]``: a file of a Hugging Face model repository,
  downloaded once by ``huggingface_hub`` into its standard cache (``HF_HOME`` / ``HF_HUB_CACHE``
  honoured) and read from there afterwards; with ``HF_HUB_OFFLINE=1`` only the cache is used;
* a model-zoo name (:data:`MODEL_ZOO`, e.g. ``densevlm-eva02-b16``), optionally written
  ``zoo://<name>``: a published checkpoint with its architecture, source, layout, licence and
  published numbers. Entries whose files are only downloadable by hand (Google Drive, OneDrive:
  :class:`ManualFile`) are looked up by file name in :func:`checkpoints_dir`
  (``$DENSEVLM_CHECKPOINTS``, default ``$DENSEVLM_CACHE/checkpoints`` or
  ``~/.cache/densevlm_d2/checkpoints``).

:func:`resolve_weights` turns a reference into a local file. Without network and without a cached
copy, the error names the repository, the file and the command that fetches it on a connected
machine.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = [
    "MODEL_ZOO",
    "HubReference",
    "ManualFile",
    "ZooEntry",
    "check_weights_reference",
    "check_zoo_model",
    "checkpoints_dir",
    "is_cached",
    "parse_hf_reference",
    "resolve_weights",
    "zoo_entry",
    "zoo_suggestions",
]

HF_PREFIX = "hf://"
ZOO_PREFIX = "zoo://"


@dataclass(frozen=True)
class HubReference:
    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HF_PREFIX}{self.repo_id}/{self.filename}{rev}"

    @property
    def fetch_command(self) -> str:
        rev = f" --revision {self.revision}" if self.revision else ""
        return f"hf download {self.repo_id} {self.filename}{rev}"


@dataclass(frozen=True)
class ManualFile:
    """A published file that only a person can download (a Google Drive or OneDrive link): placed
    by hand in :func:`checkpoints_dir` under ``filename``."""

    filename: str
    url: str

    def __str__(self) -> str:
        return str(checkpoints_dir() / self.filename)

    @property
    def fetch_command(self) -> str:
        return f"download {self.url} by hand and save it as {checkpoints_dir() / self.filename}"


def checkpoints_dir() -> Path:
    """Where files downloaded by hand are looked up by name: ``$DENSEVLM_CHECKPOINTS``, else
    ``$DENSEVLM_CACHE/checkpoints`` (default ``~/.cache/densevlm_d2/checkpoints``)."""
    if os.environ.get("DENSEVLM_CHECKPOINTS"):
        return Path(os.environ["DENSEVLM_CHECKPOINTS"])
    root = os.environ.get("DENSEVLM_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "densevlm_d2"
    )
    return Path(root) / "checkpoints"


def parse_hf_reference(ref: str) -> HubReference:
    """``hf://org/repo/path/in/repo[@revision]`` -> :class:`HubReference`."""
    body = ref[len(HF_PREFIX) :]
    body, _, revision = body.partition("@")
    parts = body.split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(
            f"{ref!r} is not a hub reference: expected hf://<org>/<repo>/<path/in/repo>"
            "[@<revision>]"
        )
    return HubReference("/".join(parts[:2]), "/".join(parts[2:]), revision or None)


@dataclass(frozen=True)
class ZooEntry:
    """A published checkpoint: where it is, what it is, what it was measured to do."""

    name: str
    model: str  # densevlm_d2 architecture name
    files: tuple[HubReference | ManualFile, ...]  # the first that resolves is used
    layout: str  # eva_clip (training wrappers {"state_dict": ...} included) or open_clip
    source: str
    licence: str
    description: str
    # published numbers this file should reproduce: DenseVLM paper Table 1 columns (top-1 / top-5
    # %: COCO Boxes, Masks-T, Masks-S; ADE Boxes, Masks-T, Masks-S) and others, each naming its
    # source
    published: dict[str, str] = field(default_factory=dict)
    # what a user should know before comparing numbers (dense path, training resolution ...)
    notes: str = ""

    @property
    def manual(self) -> bool:
        """True when its files can only be downloaded by hand."""
        return all(isinstance(f, ManualFile) for f in self.files)

    @property
    def reference(self) -> str:
        return f"{ZOO_PREFIX}{self.name}"


def _table1(*values: str) -> dict[str, str]:
    keys = ("COCO Boxes", "COCO Masks-T", "COCO Masks-S", "ADE Boxes", "ADE Masks-T", "ADE Masks-S")
    return dict(zip(keys, values, strict=True))


def _open_clip_entry(name: str, model: str, tag: str, description: str) -> ZooEntry:
    """An open_clip pretrained tag, located as open_clip locates it (safetensors first)."""
    import open_clip

    from .models import open_clip_name

    repo = open_clip.get_pretrained_cfg(open_clip_name(model), tag)["hf_hub"].strip("/")
    files = tuple(
        HubReference(repo, f)
        for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    )
    return ZooEntry(
        name, model, files, "open_clip", f"open_clip pretrained tag {tag!r}", "see the repository",
        description,
    )  # fmt: skip


_EVA = "QuanSun/EVA-CLIP"
_DENSEVLM = "lyhisme/DenseVLM"
_DECLIP_B = "xiaomoguhzz/DeCLIP_EVA-B_DINOv2-B_csa_0.05_2.0"
_DECLIP_L = "xiaomoguhzz/DeCLIP_EVA-L_DINOv2-L_csa_0.05_2.0"
_DECLIP_NOTE = (
    "DeCLIP reads dense features through its 'csa' last block (query-query plus key-key "
    "attention), which this project does not implement: its dense map (the value path) gives "
    "other dense numbers; crops and the CLS embedding are unaffected"
)
_CLIPSELF_DRIVE = "https://drive.google.com/file/d/{}/view"
_CLIPSELF_NOTE = (
    "trained at {} px with CLIPSelf's weight blend (alpha {}); the F-ViT numbers are of a "
    "detector trained on top (MMDetection), not of this file alone"
)


def _declip_entry(name: str, model: str, repo: str, size: str) -> ZooEntry:
    """A DeCLIP release: one hub repository per model, holding the training script's last
    checkpoint (``epoch_6.pt``; a renamed copy is tried too)."""
    files = tuple(HubReference(repo, f) for f in ("epoch_6.pt", f"{repo.split('/')[1]}.pt"))
    return ZooEntry(
        name, model, files, "eva_clip",
        "DeCLIP release (xiaomoguhz/DeCLIP, DeCLIP_CATSeg branch; CVPR 2025)",
        "Apache-2.0 (the code repository's; the model card names none)",
        f"DeCLIP: EVA02-CLIP-{size} distilled from itself (content) and DINOv2-{size[0]} "
        "(context) on COCO, 6 epochs",
        notes=_DECLIP_NOTE,
    )  # fmt: skip


def _clipself_entry(
    name: str, model: str, file: str, drive_id: str, what: str, published: dict[str, str]
) -> ZooEntry:
    """A CLIPSelf release (Google Drive only): downloaded by hand, found by file name."""
    size, alpha = ("1024", "0.7") if model == "EVA02-CLIP-B-16" else ("896", "0.95")
    return ZooEntry(
        name, model, (ManualFile(file, _CLIPSELF_DRIVE.format(drive_id)),), "eva_clip",
        "CLIPSelf release (wusize/CLIPSelf, ICLR 2024)", "NTU S-Lab License 1.0 (non-commercial)",
        what, published, notes=_CLIPSELF_NOTE.format(size, alpha),
    )  # fmt: skip


def _ov_coco(ap50: str) -> dict[str, str]:
    return {"F-ViT OV-COCO AP50 novel (CLIPSelf README)": ap50}


def _ov_lvis(apr: str) -> dict[str, str]:
    return {"F-ViT OV-LVIS mask APr (CLIPSelf README)": apr}


MODEL_ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            "eva02-clip-b16",
            "EVA02-CLIP-B-16",
            (HubReference(_EVA, "EVA02_CLIP_B_psz16_s8B.pt"),),
            "eva_clip",
            "EVA-CLIP release (baaivision/EVA)",
            "MIT",
            "EVA02-CLIP-B/16, the DenseVLM/CLIPSelf student's starting point",
            _table1(
                "44.3 / 68.7",
                "44.7 / 66.0",
                "26.2 / 51.9",
                "33.0 / 57.6",
                "33.9 / 56.2",
                "36.2 / 62.3",
            ),
        ),  # fmt: skip
        ZooEntry(
            "eva02-clip-l14-336",
            "EVA02-CLIP-L-14-336",
            (HubReference(_EVA, "EVA02_CLIP_L_336_psz14_s6B.pt"),),
            "eva_clip",
            "EVA-CLIP release (baaivision/EVA)",
            "MIT",
            "EVA02-CLIP-L/14 at 336 px, the CLIPSelf L/14 recipes' starting point",
        ),
        ZooEntry(
            "eva02-clip-l14",
            "EVA02-CLIP-L-14",
            (HubReference(_EVA, "EVA02_CLIP_L_psz14_s4B.pt"),),
            "eva_clip",
            "EVA-CLIP release (baaivision/EVA)",
            "MIT",
            "EVA02-CLIP-L/14 at 224 px",
        ),
        ZooEntry(
            "densevlm-eva02-b16",
            "EVA02-CLIP-B-16",
            (HubReference(_DENSEVLM, "densevlm_coco_6_save6_512_eva_vib16_12layers.pt"),),
            "eva_clip",
            "DenseVLM release (HVision-NKU/DenseVLM)",
            "CC BY-NC 4.0",
            "DenseVLM student: EVA02-CLIP-B/16 fine-tuned on COCO, 6 epochs, 512 px",
            _table1(
                "72.3 / 89.9",
                "70.1 / 84.4",
                "44.9 / 76.4",
                "51.0 / 81.8",
                "49.3 / 76.5",
                "57.0 / 84.0",
            ),
        ),  # fmt: skip
        ZooEntry(
            "densevlm-teacher-eva02-l14-336",
            "EVA02-CLIP-L-14-336",
            (HubReference(_DENSEVLM, "clipself_coco_6_save6_512_eva_vitl14_24layers.pt"),),
            "eva_clip",
            "DenseVLM release (HVision-NKU/DenseVLM)",
            "CC BY-NC 4.0",
            "DenseVLM's teacher: EVA02-CLIP-L/14-336 refined with CLIPSelf on COCO, 512 px",
        ),
        _open_clip_entry(
            "openclip-eva02-b16",
            "EVA02-CLIP-B-16",
            "merged2b_s8b_b131k",
            "EVA02-CLIP-B/16 as open_clip publishes it (the same weights as eva02-clip-b16)",
        ),  # fmt: skip
        _open_clip_entry(
            "openclip-eva02-l14-336",
            "EVA02-CLIP-L-14-336",
            "merged2b_s6b_b61k",
            "EVA02-CLIP-L/14-336 as open_clip publishes it",
        ),  # fmt: skip
        _open_clip_entry(
            "openai-vit-b16",
            "ViT-B-16-quickgelu",
            "openai",
            "OpenAI CLIP ViT-B/16 (QuickGELU), as open_clip publishes it",
        ),  # fmt: skip
        replace(
            _declip_entry("declip-eva02-b16", "EVA02-CLIP-B-16", _DECLIP_B, "B/16"),
            published={
                "CAT-Seg on it, mIoU A-847 / PC-459 / A-150 / PC-59 / VOC-20 / VOC-21 (release "
                "README, retrained)": "15.20 / 21.47 / 36.57 / 60.89 / 96.68 / 81.54",
                "the same in the paper (PAS-20b for VOC-21)": "15.3 / 21.4 / 36.3 / 60.6 / 96.6 / "
                "81.3",
            },
        ),
        _declip_entry("declip-eva02-l14-336", "EVA02-CLIP-L-14-336", _DECLIP_L, "L/14-336"),
        _clipself_entry(
            "clipself-eva02-b16-coco-patches",
            "EVA02-CLIP-B-16",
            "eva_vitb16_coco_clipself_patches.pt",
            "1Nz1xH7cbR8HEW40rMtYUn3PE5ypLw5vb",
            "CLIPSelf, EVA02-CLIP-B/16, COCO image patches",
            _ov_coco("33.6"),
        ),  # fmt: skip
        _clipself_entry(
            "clipself-eva02-b16-coco-proposals",
            "EVA02-CLIP-B-16",
            "eva_vitb16_coco_clipself_proposals.pt",
            "1Tf8gJWmbRnsX8verC6Ee7lK3Dm781p5M",
            "CLIPSelf, EVA02-CLIP-B/16, COCO region proposals",
            _ov_coco("37.6"),
        ),  # fmt: skip
        _clipself_entry(
            "regionclip-eva02-b16-coco",
            "EVA02-CLIP-B-16",
            "eva_vitb16_coco_regionclip.pt",
            "1lfaSAenNpfE1Smiv2WIdj0y4Mcb3NrP7",
            "RegionCLIP-style refinement (region proposals with pseudo labels), EVA02-CLIP-B/16, "
            "COCO",
            _ov_coco("34.4"),
        ),  # fmt: skip
        _clipself_entry(
            "clipself-eva02-l14-coco-patches",
            "EVA02-CLIP-L-14-336",
            "eva_vitl14_coco_clipself_patches.pt",
            "1vycKoimE2-QHjzQFCXMc4YH-tfJq-GMT",
            "CLIPSelf, EVA02-CLIP-L/14-336, COCO image patches",
            _ov_coco("38.4"),
        ),  # fmt: skip
        _clipself_entry(
            "clipself-eva02-l14-coco-proposals",
            "EVA02-CLIP-L-14-336",
            "eva_vitl14_coco_clipself_proposals.pt",
            "1UQ3YpYeoXs4ESruUqrpWE4VwOD5UHp-S",
            "CLIPSelf, EVA02-CLIP-L/14-336, COCO region proposals",
            _ov_coco("44.3"),
        ),  # fmt: skip
        _clipself_entry(
            "regionclip-eva02-l14-coco",
            "EVA02-CLIP-L-14-336",
            "eva_vitl14_coco_regionclip.pt",
            "1unxcWfzNQfyPj_PYtgtr8prne63l80eh",
            "RegionCLIP-style refinement, EVA02-CLIP-L/14-336, COCO",
            _ov_coco("38.7"),
        ),  # fmt: skip
        _clipself_entry(
            "clipself-eva02-b16-lvis-patches",
            "EVA02-CLIP-B-16",
            "eva_vitb16_lvis_clipself_patches.pt",
            "1-yfrMVaS4aN5uZSYCTalhJ_Pq3j_2aT4",
            "CLIPSelf, EVA02-CLIP-B/16, LVIS image patches",
            _ov_lvis("25.3"),
        ),  # fmt: skip
        _clipself_entry(
            "clipself-eva02-l14-lvis-patches",
            "EVA02-CLIP-L-14-336",
            "eva_vitl14_lvis_clipself_patches.pt",
            "1_bQMw-R0tBgvFWAAJFi7RbAHN4-OYIz0",
            "CLIPSelf, EVA02-CLIP-L/14-336, LVIS image patches",
            _ov_lvis("34.9"),
        ),  # fmt: skip
    )
}


def zoo_suggestions(name: str) -> str:
    """``"; did you mean 'x'?"`` for the zoo names close to ``name`` (difflib), else ``""``."""
    name = name[len(ZOO_PREFIX) :] if name.startswith(ZOO_PREFIX) else name
    close = difflib.get_close_matches(name, list(MODEL_ZOO), n=2, cutoff=0.75)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def zoo_entry(ref: str) -> ZooEntry | None:
    """The zoo entry a reference names (``name`` or ``zoo://name``), else None."""
    name = ref[len(ZOO_PREFIX) :] if ref.startswith(ZOO_PREFIX) else ref
    entry = MODEL_ZOO.get(name)
    if entry is None and ref.startswith(ZOO_PREFIX):
        raise ValueError(
            f"{ref!r}: no such model-zoo entry{zoo_suggestions(name)} (entries: "
            f"{', '.join(MODEL_ZOO)})"
        )
    return entry


def _download(file: HubReference, offline: bool | None = None) -> str:
    from huggingface_hub import hf_hub_download

    kwargs = {"local_files_only": True} if offline else {}
    return hf_hub_download(file.repo_id, file.filename, revision=file.revision, **kwargs)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "") not in (
        "",
        "0",
        "false",
        "False",
    )


def _cause(e: BaseException) -> str:
    """An exception's type and the first line of its message (the cause a user can act on)."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first.rstrip('.')}" if first else type(e).__name__


def _resolve_manual(files: tuple[ManualFile, ...], what: str) -> Path:
    """A file downloaded by hand, found by name in :func:`checkpoints_dir`."""
    for file in files:
        path = checkpoints_dir() / file.filename
        if path.is_file():
            return path
    file, folder = files[0], checkpoints_dir()
    raise FileNotFoundError(
        f"{what}: {file.filename} is not in {folder} (only downloadable by hand). To get it: "
        f"download {file.url} in a browser and save it as {folder / file.filename} (or set "
        "DENSEVLM_CHECKPOINTS to the folder that holds it), or give the file's path instead of "
        "the name"
    )


def _resolve_files(
    files: tuple[HubReference | ManualFile, ...],
    what: str,
    zoo_name: str = "",
    downloading: bool = False,
) -> Path:
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if all(isinstance(f, ManualFile) for f in files):
        return _resolve_manual(files, what)
    offline = _offline()
    problems = []
    for file in files:
        try:
            return Path(_download(file, offline))
        except (LocalEntryNotFoundError, EntryNotFoundError, OSError, ValueError) as e:
            problems.append(f"{file}: {_cause(e)}")
    copy = f"copy its hub cache to this machine and point HF_HUB_CACHE at it (now {_cache_dir()})"
    fetch = (
        f"`python -m densevlm_d2.model_zoo download {zoo_name}`"
        if zoo_name
        else f"`{files[0].fetch_command}`"
    )
    elsewhere = (
        f"download it on a machine with network access and {copy}"
        if downloading  # the download command itself: its advice is not to run it again
        else f"on a machine with network access run {fetch}, then {copy}"
    )
    if offline:
        advice = (
            "HF_HUB_OFFLINE is set, so only the cache was searched: unset HF_HUB_OFFLINE where the "
            f"hub is reachable, or {elsewhere}"
        )
    else:
        advice = (
            "the hub did not answer with the file (the cause above): check this machine's network "
            f"access (a proxy: HTTPS_PROXY; a mirror: HF_ENDPOINT), or {elsewhere}"
        )
    where = "the hub cache (offline)" if offline else "the hub or its cache"
    raise FileNotFoundError(
        f"{what}: not found in {where}; tried {'; '.join(problems)}. To get it: {advice}."
    )


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def resolve_weights(ref: str | os.PathLike, *, downloading: bool = False) -> Path:
    """A weight reference (local path, ``hf://`` reference, zoo name) -> a local file.
    ``downloading``: the caller is the download command (its advice is not to run itself)."""
    text = os.fspath(ref)
    if text.startswith(HF_PREFIX):
        file = parse_hf_reference(text)
        return _resolve_files((file,), f"hub file {file}", downloading=downloading)
    entry = zoo_entry(text) if not os.path.exists(text) else None
    if entry is not None:
        return _resolve_files(
            entry.files, f"model-zoo entry {entry.name!r}", entry.name, downloading=downloading
        )
    if not os.path.exists(text) and zoo_suggestions(text):
        raise FileNotFoundError(
            f"no such file, and not a model-zoo name{zoo_suggestions(text)} (entries: "
            f"{', '.join(MODEL_ZOO)})"
        )
    return Path(text)


def check_weights_reference(ref: str | os.PathLike) -> None:
    """Raise ``FileNotFoundError`` for a reference that cannot name weights, without touching the
    network or reading the file: a missing local file (with the zoo names it is close to) or an
    unknown ``zoo://`` name (``ValueError``). Hub references, zoo names and other URLs
    (``detectron2://``, ``https://``: detectron2's path handlers) pass: they are resolved when
    loaded."""
    text = os.fspath(ref)
    if text.startswith(HF_PREFIX):
        parse_hf_reference(text)
        return
    if "://" in text and not text.startswith(ZOO_PREFIX):
        return
    if os.path.exists(text) or zoo_entry(text) is not None:
        return
    raise FileNotFoundError(
        "file not found"
        + (f", and not a model-zoo name{zoo_suggestions(text)}" if zoo_suggestions(text) else "")
    )


def is_cached(entry: ZooEntry) -> Path | None:
    """The cached file of a zoo entry (a file downloaded by hand: in :func:`checkpoints_dir`), or
    None (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    for file in entry.files:
        if isinstance(file, ManualFile):
            path = checkpoints_dir() / file.filename
            if path.is_file():
                return path
            continue
        path = try_to_load_from_cache(file.repo_id, file.filename, revision=file.revision)
        if isinstance(path, str):
            return Path(path)
    return None


def check_zoo_model(ref: str | os.PathLike, model_name: str, key: str) -> None:
    """A model-zoo reference given for a CLIP built as ``model_name`` (the config key ``key``
    names it) must be of that architecture: otherwise a ``ValueError`` naming both. Other
    references pass (their files are checked when loaded)."""
    from .models import open_clip_name

    text = os.fspath(ref)
    entry = zoo_entry(text) if text and not os.path.exists(text) else None
    if entry is not None and open_clip_name(entry.model) != open_clip_name(model_name):
        raise ValueError(
            f"model-zoo entry {entry.name!r} is an {entry.model} checkpoint but {key} is "
            f"{model_name!r}: set {key} to {entry.model!r}"
        )
