"""What every open-vocabulary model shares: its text settings from a config ``TEXT`` node, and the
vocabulary and output size of one input."""

from __future__ import annotations

from ..clip.text import TextSpec
from ..clip.vocabulary import Vocabulary, VocabularyError
from ..data.vocabulary import dataset_vocabulary

__all__ = ["input_vocabulary", "output_size", "text_spec"]


def text_spec(
    node, key: str, *, allow_max: bool = False, ensemble: bool = True, renormalize: bool = True
) -> TextSpec:
    """The :class:`~densevlm_d2.clip.text.TextSpec` of a component's ``TEXT`` config node
    (``key``: where it is, for errors). ``allow_max``: whether the component scores per synonym
    query (synonyms "max")."""
    t = node.TEXT
    try:
        spec = TextSpec(
            prompts=tuple(t.PROMPTS),
            style=t.PROMPT_STYLE,
            synonyms=t.SYNONYMS,
            renormalize=renormalize,
            ensemble=ensemble,
        )
    except ValueError as e:
        raise ValueError(f"{key}.TEXT: {e}") from None
    if spec.synonyms == "max" and not allow_max:
        raise ValueError(
            f"{key}.TEXT.SYNONYMS 'max' (one query per synonym, a class takes its best) is for "
            "the training-free segmenter; use 'joint', 'mean' or 'first' here"
        )
    return spec


def input_vocabulary(inp: dict) -> Vocabulary:
    """The vocabulary of one segmentation input: its ``classes`` (a list of names or a
    :class:`Vocabulary`; ``background_index`` optional), else the vocabulary of its
    ``dataset_name``. A model queries its ``queries`` (VOC-20b: 59 names for 21 classes)."""
    if "classes" in inp:
        classes = inp["classes"]
        if isinstance(classes, Vocabulary):
            return classes
        try:
            return Vocabulary.from_names(
                classes, source="the input's classes", background_index=inp.get("background_index")
            )
        except VocabularyError as e:
            raise VocabularyError(f"input 'classes': {e}") from None
    if "dataset_name" not in inp:
        raise ValueError("an input needs 'classes' or the 'dataset_name' of its vocabulary")
    return dataset_vocabulary(inp["dataset_name"])


def output_size(inp: dict) -> tuple[int, int]:
    """(height, width) a model's output for ``inp`` has: its ``height`` / ``width``, else its
    image's."""
    image = inp["image"]
    return int(inp.get("height", image.shape[-2])), int(inp.get("width", image.shape[-1]))
