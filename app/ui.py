"""The page: Gradio Blocks wired to :class:`~app.handlers.Handlers`.

Nothing is fetched from the network: the theme uses the browser's own fonts, analytics are off, and
Gradio's front end is served from the installed package."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402  (after the analytics switch)

from densevlm_d2.clip.prompts import PROMPT_SETS  # noqa: E402

from .handlers import KEEP, MODEL_DEFAULT, Handlers  # noqa: E402

__all__ = ["THEME", "build_page"]

#: Gradio's default look with local fonts only (its default fetches Google fonts)
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "monospace"],
)
CSS = """
.legend td, .compare td, .compare th { padding: 2px 8px; }
#status { min-height: 1.5em; }
"""

INTRO = """# densevlm_d2: open-vocabulary dense recognition
Pick an image, type the classes you care about (`cat, wall, sky`: one line, commas between classes;
or one class per line with its synonyms after commas; end a class with `[thing]` or `[stuff]` to say
which it is), choose a model, and look. **Side by side** shows two models on the same image: a
foreground-biased CLIP calls background regions by a thing's name."""


def _picture(label: str, elem_id: str) -> gr.Image:
    """An output picture (drawn with its own title, so Gradio's label is hidden)."""
    return gr.Image(label=label, format="png", interactive=False, elem_id=elem_id, show_label=False)


def _outputs(values):
    return tuple(gr.update() if v is KEEP else v for v in values)


def build_page(
    handlers: Handlers,
    examples: list[str],
    default_image: str | None,
    default_vocabulary: str,
) -> gr.Blocks:
    labels = handlers.catalogue.labels
    second, first = handlers.catalogue.default_pair()
    prompt_menu = [MODEL_DEFAULT, *PROMPT_SETS]

    with gr.Blocks(title="densevlm_d2") as page:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(
                    value=default_image,
                    type="pil",
                    label="Image",
                    sources=["upload", "clipboard"],
                    elem_id="input-image",
                    height=300,
                )
                if examples:
                    gr.Examples(examples=[[e] for e in examples], inputs=[image], label="Examples")
                vocabulary = gr.Textbox(
                    value=default_vocabulary, label="Vocabulary", lines=3, elem_id="vocabulary"
                )
                prompts = gr.Dropdown(
                    prompt_menu, value=MODEL_DEFAULT, label="Prompt set", elem_id="prompts"
                )
                model = gr.Dropdown(labels, value=first, label="Model", elem_id="model")
                model_b = gr.Dropdown(labels, value=second, label="Compare with", elem_id="model-b")
                if not labels:
                    gr.Markdown(
                        "**No model found.** Run `make demo` (its checkpoints are the default), "
                        "put weight files in `--models-dir`, or fill the hub cache."
                    )
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="status")
                with gr.Tabs():
                    with gr.Tab("Segment", id="segment"):
                        segment_btn = gr.Button("Segment", variant="primary", elem_id="segment-btn")
                        segmentation = _picture("Segmentation", "segmentation")
                        legend = gr.HTML(elem_id="legend")
                    with gr.Tab("Score map", id="score"):
                        class_name = gr.Dropdown(
                            [], label="Class", allow_custom_value=True, elem_id="score-class"
                        )
                        score_btn = gr.Button("Show score map", elem_id="score-btn")
                        score = _picture("Score map", "score-map")
                    with gr.Tab("Region query", id="query"):
                        gr.Markdown(
                            "Click the picture for the segment under the point, or give a box."
                        )
                        canvas = gr.Image(
                            type="pil",
                            label="Click a point",
                            interactive=False,
                            elem_id="query-canvas",
                            height=300,
                        )
                        with gr.Row():
                            box = gr.Textbox(label="Box: x0, y0, x1, y1 (pixels)", elem_id="box")
                            box_btn = gr.Button("Query box", elem_id="box-btn")
                        query = _picture("Region", "query-region")
                        top5 = gr.Label(num_top_classes=5, label="Top-5 classes", elem_id="top5")
                    with gr.Tab("Side by side", id="compare"):
                        compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
                        with gr.Row():
                            picture_a = _picture("Model", "compare-a")
                            picture_b = _picture("Compare with", "compare-b")
                        table = gr.HTML(elem_id="compare-table")

        def names(text):
            try:
                names = list(handlers.vocabulary(text).display_names)
            except ValueError:
                return gr.update(choices=[], value=None)
            return gr.update(choices=names, value=names[0])

        def on_segment(img, text, p, m, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
            return _outputs(handlers.segment(img, text, p, m, progress))

        def on_score(img, text, p, m, c, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
            return _outputs(handlers.score_map(img, text, p, m, c, progress))

        def on_click(img, text, p, m, evt: gr.SelectData, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
            x, y = evt.index
            return _outputs(handlers.query_point(img, text, p, m, x, y, progress))

        def on_box(img, text, p, m, b, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
            return _outputs(handlers.query_box(img, text, p, m, b, progress))

        def on_compare(img, text, p, a, b, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
            return _outputs(handlers.compare(img, text, p, a, b, progress))

        common = [image, vocabulary, prompts, model]
        vocabulary.change(names, vocabulary, class_name)
        page.load(names, vocabulary, class_name)
        image.change(lambda img: img, image, canvas)
        page.load(lambda img: img, image, canvas)
        segment_btn.click(on_segment, common, [segmentation, legend, status])
        score_btn.click(on_score, [*common, class_name], [score, status])
        canvas.select(on_click, common, [query, top5, status])
        box_btn.click(on_box, [*common, box], [query, top5, status])
        compare_btn.click(
            on_compare,
            [image, vocabulary, prompts, model, model_b],
            [picture_a, picture_b, table, status],
        )
    return page
