"""What each button of the app does, as plain functions of the page's values (testable without a
browser). Every handler returns its outputs and a status line in Markdown; a problem (no image, an
empty vocabulary, an image too large, a model that fails to load) becomes that status line, the
other outputs stay as they were, and the app keeps serving."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import html
import logging
import re
import threading
from collections.abc import Callable, Sequence

from PIL import Image

from densevlm_d2.clip.preprocess import to_pil_rgb
from densevlm_d2.clip.vocabulary import Vocabulary, VocabularyError
from densevlm_d2.predictor import OpenVocabPredictor, Segmentation
from densevlm_d2.visualization import (
    draw_region_query,
    draw_score_map,
    draw_segmentation,
    palette,
)

from .catalogue import Catalogue

__all__ = ["MODEL_DEFAULT", "Handlers", "KEEP", "UserError"]

logger = logging.getLogger(__name__)
#: the prompt-set menu entry that keeps each model's own prompts
MODEL_DEFAULT = "model default"
#: an output the handler leaves as it is (the page keeps what it shows)
KEEP = object()


class UserError(ValueError):
    """A problem with what was given in the page (shown as it is, without its type)."""


def _fmt_seconds(seconds: dict[str, float]) -> str:
    return " · ".join(f"{k} {v:.2f} s" for k, v in seconds.items())


def _guarded(n_outputs: int):
    """Turn any exception of a handler into a status line (the last output); the other outputs are
    :data:`KEEP`."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            self.answers += 1
            tag = f" <small>(answer {self.answers})</small>"
            try:
                *outputs, status = fn(self, *args, **kwargs)
                return (*outputs, status + tag)
            except (UserError, VocabularyError) as e:
                message = str(e)
            except KeyError as e:
                message = str(e.args[0]) if e.args else "KeyError"
            except Exception as e:  # never a traceback in the page; the log has it
                logger.exception("%s failed", fn.__name__)
                message = f"{type(e).__name__}: {e}"
            text = html.escape(message)
            return (*([KEEP] * (n_outputs - 1)), f"**Error:** {text}{tag}")

        return inner

    return wrap


class Handlers:
    """The app's actions over a :class:`Catalogue` (one inference at a time)."""

    def __init__(
        self,
        catalogue: Catalogue,
        known: Sequence[Vocabulary] = (),
        max_pixels: int = 16_000_000,
        max_classes: int = 400,
    ):
        self.catalogue = catalogue
        self.known = tuple(known)
        self.max_pixels = max_pixels
        self.max_classes = max_classes
        self._lock = threading.Lock()
        #: answers given so far: each status line ends with its number, so that two equal answers
        #: in a row still read as two
        self.answers = 0
        self._last: dict[tuple, Segmentation] = {}

    # -- inputs ------------------------------------------------------------------------------------
    def image(self, image) -> Image.Image:
        if image is None:
            raise UserError("no image: upload one or pick an example")
        pil = to_pil_rgb(image)
        if pil.width * pil.height > self.max_pixels:
            raise UserError(
                f"the image is too large: {pil.width}x{pil.height} = "
                f"{pil.width * pil.height / 1e6:.1f} megapixels, the app takes at most "
                f"{self.max_pixels / 1e6:.1f} (--max-pixels)"
            )
        return pil

    def vocabulary(self, text: str) -> Vocabulary:
        if not text or not text.strip():
            raise UserError("the vocabulary is empty: type class names, separated by commas")
        vocabulary = Vocabulary.from_text(text, known=self.known)
        if len(vocabulary) > self.max_classes:
            raise UserError(
                f"{len(vocabulary)} classes: the app takes at most {self.max_classes} at a time"
            )
        return vocabulary

    def predictor(
        self, label: str, prompts: str, progress: Callable | None = None
    ) -> tuple[OpenVocabPredictor, float]:
        if not label:
            raise UserError("no model chosen (see the README for how models are found)")
        report = (lambda m: progress(0.1, desc=m)) if progress else (lambda m: None)
        try:
            predictor, seconds = self.catalogue.get(label, report)
        except KeyError as e:
            raise UserError(str(e.args[0])) from None
        predictor.set_prompts(None if prompts in (None, "", MODEL_DEFAULT) else prompts)
        return predictor, seconds

    def _segment(
        self, label, prompts, pil, vocabulary, progress=None
    ) -> tuple[Segmentation, float]:
        predictor, load_s = self.predictor(label, prompts, progress)
        if progress:
            progress(
                0.4, desc=f"{label}: text embeddings of {len(vocabulary)} classes, then pixels"
            )
        key = (label, prompts, _digest(pil), vocabulary.names, vocabulary.is_thing)
        result = self._last.get(key)
        if result is None:
            result = predictor.segment(pil, vocabulary)
            self._last = {key: result, **dict(list(self._last.items())[:7])}
        else:  # the same question again: the answer is the one already computed
            result = dataclasses.replace(result, seconds={"cached result": 0.0})
        return result, load_s

    # -- actions -----------------------------------------------------------------------------------
    @_guarded(3)
    def segment(self, image, vocab_text, prompts, label, progress=None):
        """-> (picture, legend HTML, status)."""
        with self._lock:
            pil, vocabulary = self.image(image), self.vocabulary(vocab_text)
            result, load_s = self._segment(label, prompts, pil, vocabulary, progress)
        names = vocabulary.display_names
        picture = draw_segmentation(pil, result.labels, names, title=label)
        status = f"**{html.escape(label)}**: " + _fmt_seconds(_with_load(result.seconds, load_s))
        return picture, legend_html(result), status

    @_guarded(2)
    def score_map(self, image, vocab_text, prompts, label, class_name, progress=None):
        """-> (picture, status)."""
        with self._lock:
            pil, vocabulary = self.image(image), self.vocabulary(vocab_text)
            if not class_name:
                raise UserError("choose a class for the score map")
            result, load_s = self._segment(label, prompts, pil, vocabulary, progress)
            try:
                scores = result.score_map(class_name)
            except KeyError:
                raise UserError(f"'{class_name}' is not a class of the vocabulary") from None
        picture = draw_score_map(pil, scores, class_name, title=label)
        return picture, f"**{html.escape(label)}**: " + _fmt_seconds(
            _with_load(result.seconds, load_s)
        )

    @_guarded(3)
    def query_point(self, image, vocab_text, prompts, label, x, y, progress=None):
        """-> (picture, {class: probability} of the top 5, status)."""
        with self._lock:
            pil, vocabulary = self.image(image), self.vocabulary(vocab_text)
            segmentation, load_s = self._segment(label, prompts, pil, vocabulary, progress)
            predictor, _ = self.predictor(label, prompts)
            query = predictor.query_point(pil, (x, y), vocabulary, segmentation)
        return self._query_outputs(pil, query, label, f"the segment under ({x:.0f}, {y:.0f})",
                                   load_s)  # fmt: skip

    @_guarded(3)
    def query_box(self, image, vocab_text, prompts, label, box_text, progress=None):
        """``box_text``: "x0, y0, x1, y1" in pixels of the image -> as :meth:`query_point`."""
        with self._lock:
            pil, vocabulary = self.image(image), self.vocabulary(vocab_text)
            box = parse_box(box_text)
            predictor, load_s = self.predictor(label, prompts, progress)
            query = predictor.query_box(pil, box, vocabulary)
        where = "the box (" + ", ".join(f"{v:.0f}" for v in query.box) + ")"
        return self._query_outputs(pil, query, label, where, load_s)

    def _query_outputs(self, pil, query, label, where, load_s):
        top = query.top(5)
        picture = draw_region_query(pil, query.mask, top, title=f"{label}: {where}")
        status = f"**{html.escape(label)}**, {html.escape(where)}: " + _fmt_seconds(
            _with_load(query.seconds, load_s)
        )
        return picture, dict(top), status

    @_guarded(4)
    def compare(self, image, vocab_text, prompts, label_a, label_b, progress=None):
        """-> (picture A, picture B, table HTML, status)."""
        with self._lock:
            pil, vocabulary = self.image(image), self.vocabulary(vocab_text)
            results = []
            for label in (label_a, label_b):
                results.append(self._segment(label, prompts, pil, vocabulary, progress))
        names = vocabulary.display_names
        pictures = [
            draw_segmentation(pil, r.labels, names, title=label)
            for (r, _), label in zip(results, (label_a, label_b), strict=True)
        ]
        status = " — ".join(
            f"**{html.escape(lab)}**: " + _fmt_seconds(_with_load(r.seconds, s))
            for (r, s), lab in zip(results, (label_a, label_b), strict=True)
        )
        return (*pictures, compare_html([r for r, _ in results]), status)


def _with_load(seconds: dict[str, float], load_s: float) -> dict[str, float]:
    return {"model load": load_s, **seconds} if load_s else dict(seconds)


def _digest(pil: Image.Image) -> str:
    return hashlib.blake2b(pil.tobytes(), digest_size=16).hexdigest() + f"{pil.size}"


def parse_box(text: str) -> tuple[float, float, float, float]:
    """ "x0, y0, x1, y1" -> four floats (a clear error otherwise)."""
    parts = [p for p in re.split(r"[,\s]+", (text or "").strip()) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise UserError(f"a box is four numbers x0, y0, x1, y1 (pixels), got {text!r}")
    return values


def _kind_line(result: Segmentation) -> str:
    kinds = result.kind_shares()
    if kinds is None:
        return (
            "<p>thing / stuff: not known for every class; mark a class with <code>[thing]</code> "
            "or <code>[stuff]</code></p>"
        )
    return (
        f"<p class='kinds'>things <b>{100 * kinds['thing']:.1f}%</b> · stuff "
        f"<b>{100 * kinds['stuff']:.1f}%</b> of the pixels</p>"
    )


def legend_html(result: Segmentation) -> str:
    """Each class's colour, name and share of pixels (largest first), and the thing/stuff shares."""
    names = result.vocabulary.display_names
    colours = palette(len(names))
    shares = result.shares().tolist()
    order = sorted(range(len(names)), key=lambda i: (-shares[i], i))
    rows = "".join(
        f"<tr><td><span style='display:inline-block;width:1em;height:1em;"
        f"background:rgb{tuple(colours[i])}'></span></td><td class='name'>"
        f"{html.escape(names[i])}</td><td>{100 * shares[i]:.1f}%</td></tr>"
        for i in order
    )
    return f"{_kind_line(result)}<table class='legend'>{rows}</table>"


def compare_html(results: Sequence[Segmentation]) -> str:
    """One row per model: things' and stuff's shares of the pixels, and the seconds taken."""
    rows = []
    for r in results:
        kinds = r.kind_shares()
        thing, stuff = (
            (f"{100 * kinds['thing']:.1f}%", f"{100 * kinds['stuff']:.1f}%")
            if kinds
            else ("?", "?")
        )
        rows.append(
            f"<tr><td>{html.escape(r.model)}</td><td>{thing}</td><td>{stuff}</td>"
            f"<td>{r.seconds.get('total', 0):.2f} s</td></tr>"
        )
    head = "<tr><th>model</th><th>things</th><th>stuff</th><th>time</th></tr>"
    note = "" if all(r.kind_shares() for r in results) else _kind_line(results[0])
    return f"<table class='compare'>{head}{''.join(rows)}</table>{note}"
