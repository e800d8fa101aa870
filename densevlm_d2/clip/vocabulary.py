"""Class vocabularies: the one value every open-vocabulary model, evaluator and tool takes its
classes from.

A :class:`Vocabulary` holds the class names in label order and what is known about them: the
synonyms of each name, a display name, thing/stuff flags, the background class, the names a
model is queried with when they differ from the scored ones (VOC-20b), the novel classes of a
detection split, and where it came from. It is validated once, where it is made
(:meth:`Vocabulary.from_names`, :meth:`Vocabulary.from_file`, or from a registered dataset with
:func:`densevlm_d2.data.dataset_vocabulary`): a bare string, an empty list, a name that is not a
string or is blank is refused with its index, and repeated names are reported.

Synonyms: a class name may list several, separated by commas (``"tv, television"``); the first is
the display name. How synonyms become text embeddings is the text classifier's choice
(:class:`~densevlm_d2.clip.text.TextSpec`).

The one class-list file format (``densevlm_d2/data/vocabularies/*.json``)::

    {
      "source": "where the names come from",
      "classes": ["person", "bicycle", ...],          # label order; ", "-separated synonyms
      "is_thing": [true, true, ..., false],            # optional: thing/stuff flag per class
      "background_index": 0,                           # optional: the background class
      "query_classes": ["aeroplane", ..., "wood"],     # optional: queried instead (VOC-20b)
      "novel_classes": ["airplane", ...],              # optional: detection's novel classes
      ...                                              # other fields are kept, not interpreted
    }
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Vocabulary",
    "VocabularyError",
    "check_class_names",
    "first_difference",
    "split_synonyms",
    "warn_repeats",
]

logger = logging.getLogger(__name__)

BACKGROUND = "background"


class VocabularyError(ValueError):
    """A vocabulary (a list of class names, or a class-list file) is not valid; the message names
    the problem and the index or file."""


def split_synonyms(name: str) -> tuple[str, ...]:
    """``"tv, television"`` -> ``("tv", "television")`` (blank parts dropped)."""
    return tuple(w.strip() for w in name.split(",") if w.strip())


def first_difference(a: Sequence[str], b: Sequence[str]) -> int:
    """The first index where two name lists differ (the shorter one's length when one extends the
    other)."""
    common = min(len(a), len(b))
    return next((i for i in range(common) if a[i] != b[i]), common)


def _indices(items: Sequence, limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_class_names(names, what: str = "vocabulary", warn: bool = True) -> tuple[str, ...]:
    """``names`` as a tuple of strings, or a :class:`VocabularyError` that names the problem: a bare
    string (``"cat"`` would be read as three classes), something that is not a list of names, an
    empty list, names that are not strings, blank names (with their indices). Repeated names are
    reported with a warning when ``warn`` (they get identical embeddings)."""
    if isinstance(names, str | bytes):
        raise VocabularyError(
            f"a {what} is a list of class names, got the string {names!r:.80}: put a single name "
            f"in a list ([{names!r:.40}]) or split a comma-separated list of classes"
        )
    if hasattr(names, "tolist") and not isinstance(names, Sequence):  # numpy arrays
        names = names.tolist()
    if isinstance(names, set | frozenset | dict) or not isinstance(names, Iterable):
        raise VocabularyError(
            f"a {what} is an ordered list of class names, got {type(names).__name__}"
        )
    names = tuple(names)
    if not names:
        raise VocabularyError(f"empty {what}: give at least one class name")
    not_str = [i for i, n in enumerate(names) if not isinstance(n, str)]
    if not_str:
        raise VocabularyError(
            f"class names must be strings; the {what} has "
            f"{', '.join(sorted({type(names[i]).__name__ for i in not_str}))} at index "
            f"{_indices(not_str)}"
        )
    blank = [i for i, n in enumerate(names) if not split_synonyms(n)]
    if blank:
        raise VocabularyError(
            f"class names must not be blank; the {what} has {[names[i] for i in blank[:5]]} at "
            f"index {_indices(blank)}"
        )
    if warn:
        warn_repeats(names, what)
    return names


def warn_repeats(names: Sequence[str], what: str) -> None:
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        logger.warning(
            "the %s repeats %s (repeated classes get identical embeddings)", what, repeated[:10]
        )


def _describe(source: str) -> str:
    return "vocabulary" if source == "user list" else f"vocabulary of {source}"


@dataclass(frozen=True)
class Vocabulary:
    """Class names in label order and what is known about them (see the module docstring).

    ``names``: one string per class (``", "``-separated synonyms); ``is_thing``: thing/stuff flag
    per class, or None when unknown; ``background_index``: the background class, if any;
    ``query_names``: the names a model is asked about when they are not ``names`` (their first
    ``len(names) - 1`` entries are the scored classes in order, every later query counts as the
    last class); ``novel``: names of the novel classes of a detection split; ``source``: where
    the vocabulary came from (a registered dataset or vocabulary name, a file, "user list").
    """

    names: tuple[str, ...]
    is_thing: tuple[bool, ...] | None = None
    background_index: int | None = None
    query_names: tuple[str, ...] | None = None
    novel: tuple[str, ...] = ()
    source: str = "user list"
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        where = _describe(self.source)
        object.__setattr__(self, "names", check_class_names(self.names, where, warn=False))
        k = len(self.names)
        if self.is_thing is not None:
            flags = tuple(self.is_thing)
            if len(flags) != k or not all(isinstance(f, bool | int) for f in flags):
                raise VocabularyError(
                    f"{where}: is_thing must hold one boolean per class ({k}), got "
                    f"{len(flags)} values"
                )
            object.__setattr__(self, "is_thing", tuple(bool(f) for f in flags))
        b = self.background_index
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < k):
            raise VocabularyError(
                f"{where}: background_index {b!r} is not a class index (0..{k - 1})"
            )
        if self.query_names is not None:
            queries = check_class_names(
                self.query_names, f"query list of {self.source}", warn=False
            )
            scored = k - 1
            if len(queries) <= scored or queries[:scored] != self.names[:scored]:
                raise VocabularyError(
                    f"{where}: query_names must start with the first {scored} class names in "
                    f"order and hold more names after them (every later query counts as the last "
                    f"class, {self.names[-1]!r}); got {len(queries)} names"
                )
            object.__setattr__(self, "query_names", queries)
        novel = tuple(self.novel)
        unknown = sorted(set(novel) - set(self.names))
        if unknown:
            raise VocabularyError(
                f"{where}: novel classes {unknown[:10]} are not among its classes"
            )
        object.__setattr__(self, "novel", novel)

    # -- making one --------------------------------------------------------------------------------
    @classmethod
    def from_names(cls, names, source: str = "user list", **kwargs) -> Vocabulary:
        """A vocabulary from a list of class names (validated, repeats reported; see
        :func:`check_class_names`); a :class:`Vocabulary` is returned as it is."""
        if isinstance(names, Vocabulary):
            return names
        vocabulary = cls(names=names, source=source, **kwargs)
        warn_repeats(vocabulary.names, _describe(source))
        return vocabulary

    @classmethod
    def from_text(
        cls, text: str, source: str = "typed list", known: Iterable[Vocabulary] = ()
    ) -> Vocabulary:
        """A vocabulary typed as text (the app's box, ``tools/predict.py --vocabulary``).

        One line: each comma-separated name is a class (``"cat, wall, sky"``). Several lines: one
        class per line, commas separating its synonyms, as in a class-list file (``"tv,
        television"``). A class may end with ``[thing]`` or ``[stuff]``; a class without one
        takes the flag of the first vocabulary in ``known`` that has its first synonym with a flag.
        ``is_thing`` is set when every class has a flag, else left unknown (None)."""
        if not isinstance(text, str):
            raise VocabularyError(f"a typed vocabulary is text, got {type(text).__name__}")
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        if len(lines) == 1:
            lines = [part.strip() for part in lines[0].strip(", ").split(",")]
            if any(not part for part in lines):
                raise VocabularyError(
                    f"the {source} has an empty name between commas: {text.strip()!r:.120}"
                )
        names, flags = [], []
        for line in lines:
            flag = None
            for kind, value in (("[thing]", True), ("[stuff]", False)):
                if line.lower().endswith(kind):
                    line, flag = line[: -len(kind)].strip(), value
            names.append(", ".join(split_synonyms(line)) if line else line)
            flags.append(flag)
        lookup: dict[str, bool] = {}
        for vocabulary in known:
            if vocabulary.is_thing is not None:
                for i, thing in enumerate(vocabulary.is_thing):
                    for synonym in vocabulary.synonyms(i):
                        lookup.setdefault(synonym.lower(), thing)
        flags = [
            f if f is not None or not n else lookup.get(split_synonyms(n)[0].lower())
            for n, f in zip(names, flags, strict=True)
        ]
        is_thing = tuple(flags) if flags and all(f is not None for f in flags) else None
        return cls.from_names(names, source=source, is_thing=is_thing)

    @classmethod
    def from_file(cls, path: str | os.PathLike, source: str | None = None) -> Vocabulary:
        """Read a class-list file (the format in the module docstring); errors name the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise VocabularyError(f"class-list file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VocabularyError(f"class-list file {path} cannot be read as json: {e}") from None
        if not isinstance(data, dict) or "classes" not in data:
            raise VocabularyError(
                f"{path}: a class-list file is a json object with a 'classes' list (and "
                "optionally 'is_thing', 'background_index', 'query_classes', 'novel_classes')"
            )
        known = {"classes", "is_thing", "background_index", "query_classes", "novel_classes"}
        try:
            return cls(
                names=data["classes"],
                is_thing=data.get("is_thing"),
                background_index=data.get("background_index"),
                query_names=data.get("query_classes"),
                novel=data.get("novel_classes") or (),
                source=source or str(path),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except VocabularyError as e:
            raise VocabularyError(f"{path}: {e}") from None

    def to_json(self) -> dict:
        """The class-list file content of this vocabulary."""
        out: dict = {"source": self.source, **self.extra, "classes": list(self.names)}
        if self.is_thing is not None:
            out["is_thing"] = list(self.is_thing)
        if self.background_index is not None:
            out["background_index"] = self.background_index
        if self.query_names is not None:
            out["query_classes"] = list(self.query_names)
        if self.novel:
            out["novel_classes"] = list(self.novel)
        return out

    def replace(self, **changes) -> Vocabulary:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- what it says ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def synonyms(self, index: int) -> tuple[str, ...]:
        return split_synonyms(self.names[index])

    @property
    def display_names(self) -> tuple[str, ...]:
        """The first synonym of each class; ``"background"`` at the background index."""
        names = [split_synonyms(n)[0] for n in self.names]
        if self.background_index is not None:
            names[self.background_index] = BACKGROUND
        return tuple(names)

    @property
    def queries(self) -> Vocabulary:
        """The vocabulary a model is asked about: this one, or one of ``query_names`` (whose
        background index is this one's when it is a single query before the surplus ones)."""
        if self.query_names is None:
            return self
        b = self.background_index
        return Vocabulary(
            names=self.query_names,
            background_index=b if b is not None and b < len(self.names) - 1 else None,
            source=self.source,
        )

    @property
    def surplus_index(self) -> int | None:
        """With ``query_names``: the class every query at or after this index counts as."""
        return None if self.query_names is None else len(self.names) - 1

    @property
    def novel_mask(self) -> tuple[bool, ...]:
        novel = set(self.novel)
        return tuple(n in novel for n in self.names)

    def thing_flags(self, what: str = "this use") -> tuple[bool, ...]:
        """The thing/stuff flags, or a :class:`VocabularyError` saying that ``what`` needs them."""
        if self.is_thing is None:
            raise VocabularyError(
                f"{what} needs to know which classes are things; the vocabulary of {self.source} "
                "has no thing/stuff flags (is_thing)"
            )
        return self.is_thing

    def synonym_queries(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """One query per synonym and the class of each: ``["sky, wall", "cat"]`` ->
        (``("sky", "wall", "cat")``, ``(0, 0, 1)``)."""
        queries, owner = [], []
        for index, name in enumerate(self.names):
            words = split_synonyms(name)
            queries += words
            owner += [index] * len(words)
        return tuple(queries), tuple(owner)
