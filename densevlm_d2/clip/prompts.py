"""Prompt templates: the named prompt sets, and how a class name is put into a template.

Prompt sets (:data:`PROMPT_SETS`, one registry; a config or call names one, or gives its own list of
templates, each with one ``{}`` for the name and optionally ``{article}``):

* ``"vild"``: the 63 hand-crafted templates of ViLD that the published DenseVLM generator uses;
* ``"imagenet"``: OpenAI's 80 ImageNet templates, as the training-free segmentation code (SCLIP,
  ClearCLIP, NACLIP, ...) uses them;
* ``"cat_seg"``: CAT-Seg's single template, "A photo of a {} in the scene".

Prompt styles (:data:`PROMPT_STYLES`; every set works with every style):

* ``"densevlm"``: the published generator's prompts: the name cleaned (``_`` -> space, ``/`` ->
  `` or ``, lower case, trailing dots removed), ``{article}`` "an" before a vowel letter of the raw
  name, else "a"; a prompt that starts with "a" or "the" gets the prefix "This is ";
* ``"plain"``: ``template.format(name, article=...)`` with the name as given, as OpenAI's zero-shot
  code does.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

__all__ = [
    "IMAGENET_TEMPLATES",
    "PROMPT_SETS",
    "PROMPT_STYLES",
    "VILD_TEMPLATES",
    "article",
    "clean_name",
    "prompt_templates",
    "prompts",
]

# The 63 hand-crafted templates of the published generator (from ViLD), in its order.
VILD_TEMPLATES: tuple[str, ...] = (
    "There is {article} {} in the scene.",
    "There is the {} in the scene.",
    "a photo of {article} {} in the scene.",
    "a photo of the {} in the scene.",
    "a photo of one {} in the scene.",
    "itap of {article} {}.",
    "itap of my {}.",
    "itap of the {}.",
    "a photo of {article} {}.",
    "a photo of my {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a photo of many {}.",
    "a good photo of {article} {}.",
    "a good photo of the {}.",
    "a bad photo of {article} {}.",
    "a bad photo of the {}.",
    "a photo of a nice {}.",
    "a photo of the nice {}.",
    "a photo of a cool {}.",
    "a photo of the cool {}.",
    "a photo of a weird {}.",
    "a photo of the weird {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of a clean {}.",
    "a photo of the clean {}.",
    "a photo of a dirty {}.",
    "a photo of the dirty {}.",
    "a bright photo of {article} {}.",
    "a bright photo of the {}.",
    "a dark photo of {article} {}.",
    "a dark photo of the {}.",
    "a photo of a hard to see {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of {article} {}.",
    "a low resolution photo of the {}.",
    "a cropped photo of {article} {}.",
    "a cropped photo of the {}.",
    "a close-up photo of {article} {}.",
    "a close-up photo of the {}.",
    "a jpeg corrupted photo of {article} {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of {article} {}.",
    "a blurry photo of the {}.",
    "a pixelated photo of {article} {}.",
    "a pixelated photo of the {}.",
    "a black and white photo of the {}.",
    "a black and white photo of {article} {}.",
    "a plastic {}.",
    "the plastic {}.",
    "a toy {}.",
    "the toy {}.",
    "a plushie {}.",
    "the plushie {}.",
    "a cartoon {}.",
    "the cartoon {}.",
    "an embroidered {}.",
    "the embroidered {}.",
    "a painting of the {}.",
    "a painting of a {}.",
)


# The 80 ImageNet prompt templates of OpenAI's CLIP, in the order the training-free segmentation
# code (SCLIP, ClearCLIP, NACLIP, ...) uses them; the names go in raw (prompt style "plain").
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)


#: CAT-Seg's ``PROMPT_ENSEMBLE_TYPE "single"``
CAT_SEG_TEMPLATES: tuple[str, ...] = ("A photo of a {} in the scene",)

PROMPT_SETS: dict[str, tuple[str, ...]] = {
    "vild": VILD_TEMPLATES,
    "imagenet": IMAGENET_TEMPLATES,
    "cat_seg": CAT_SEG_TEMPLATES,
}
PROMPT_STYLES = ("densevlm", "plain")


def _check_template(template, index: int) -> str:
    """A template must be a string with exactly one ``{}`` and no other field than
    ``{article}``."""
    if not isinstance(template, str):
        raise ValueError(f"prompt template {index} is {type(template).__name__}, not a string")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(
            f"prompt template {index} {template!r} is not a format string: {e}"
        ) from None
    unknown = [f for f in fields if f not in ("", "article")]
    if fields.count("") != 1 or unknown:
        raise ValueError(
            f"prompt template {index} {template!r} must hold exactly one '{{}}' for the class "
            f"name (and optionally '{{article}}'); it has {fields.count('')} '{{}}'"
            + (f" and the fields {unknown}" if unknown else "")
        )
    return template


def prompt_templates(spec: str | Sequence[str]) -> tuple[str, ...]:
    """The templates of a prompt set: a name of :data:`PROMPT_SETS`, a one-element list holding
    one (as configs give it), or a list of templates (each checked: one ``{}``, optionally
    ``{article}``)."""
    if isinstance(spec, str):
        spec = [spec]
    spec = list(spec)
    if not spec:
        raise ValueError(
            f"no prompt templates: name a prompt set ({sorted(PROMPT_SETS)}) or give templates"
        )
    if len(spec) == 1 and spec[0] in PROMPT_SETS:
        return PROMPT_SETS[spec[0]]
    named = [s for s in spec if isinstance(s, str) and s in PROMPT_SETS]
    if named:
        raise ValueError(
            f"give one prompt-set name ({sorted(PROMPT_SETS)}) or a list of templates, not both: "
            f"{spec}"
        )
    if all(isinstance(s, str) and "{" not in s for s in spec):
        raise ValueError(
            f"unknown prompt set {spec if len(spec) > 1 else spec[0]!r}: use one of "
            f"{sorted(PROMPT_SETS)}, or templates with '{{}}' for the class name"
        )
    return tuple(_check_template(t, i) for i, t in enumerate(spec))


def clean_name(name: str) -> str:
    return name.replace("_", " ").replace("/", " or ").lower().rstrip(".")


def article(name: str) -> str:
    """'an' when the raw name starts with a lower-case vowel letter, as published (the raw name, not
    the cleaned)."""
    return "an" if name[:1] in ("a", "e", "i", "o", "u") else "a"


def prompts(name: str, templates: Sequence[str], style: str = "densevlm") -> list[str]:
    """The prompts of one name (see :data:`PROMPT_STYLES`)."""
    if style == "plain":
        return [t.format(name, article=article(name)) for t in templates]
    if style != "densevlm":
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")
    texts = [t.format(clean_name(name), article=article(name)) for t in templates]
    return ["This is " + t if t.startswith("a") or t.startswith("the") else t for t in texts]
