"""The app in a real browser: headless Chromium (Selenium) against `python -m app`, serving the
demo's layout with randomly initialised demo CLIPs. A person's session: the page loads with nothing
fetched from outside, an image is uploaded, a vocabulary typed, then segmentation, a score map, two
region queries, the side-by-side comparison, and two bad inputs, each answered in the page."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from app.browser import AppBrowser, serve
from app.catalogue import DEMO_MODELS
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

VOCAB = "cup, saucer, spoon, table, wall"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(demo_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("app") / "app.log"
    port = _free_port()
    args = ["--demo-dir", str(demo_dir), "--no-zoo", "--max-pixels", "300000", "--threads", "2"]
    server = serve(args, port, log)
    browser = None
    try:
        browser = AppBrowser(f"http://127.0.0.1:{port}/")
        yield browser
    finally:
        if browser is not None:
            browser.close()
        server.terminate()
        server.wait(timeout=30)


def test_a_session_in_the_browser(page, tmp_path):
    shots = tmp_path / "shots"
    # the page: the demo's models, DenseVLM first and the pretrained student beside it
    assert page.resource_hosts() <= {f"127.0.0.1:{page.driver.current_url.split(':')[2][:-1]}"}
    assert page.value("model") == DEMO_MODELS["densevlm"]
    assert page.value("model-b") == DEMO_MODELS["student"]

    page.upload(ROOT / "densevlm_d2/assets/coffee.jpg")  # a photograph shipped with the package
    page.type_into("vocabulary", VOCAB)

    status = page.run("segment-btn", "segmentation")
    assert DEMO_MODELS["densevlm"] in status and "image" in status, status
    legend = page.text("#legend")
    for name in VOCAB.split(", "):
        assert name in legend
    assert "%" in legend
    page.screenshot(shots / "segment.png")

    page.tab("Score map")
    status = page.run("score-btn", "score-map")
    assert "Error" not in status, status

    page.tab("Region query")
    page.type_into("box", "150, 50, 450, 300")
    status = page.run("box-btn", "query-region")
    assert "the box (150, 50, 450, 300)" in status, status
    top5 = page.text("#top5")
    assert sum(name in top5 for name in VOCAB.split(", ")) == 5, top5
    status = page.click_image("query-canvas", 0.2, 0.2)
    assert "the segment under" in status, status

    page.tab("Side by side")
    status = page.run("compare-btn", "compare-b")
    table = page.text("#compare-table")
    assert DEMO_MODELS["student"] in table and DEMO_MODELS["densevlm"] in table, table
    page.screenshot(shots / "side_by_side.png")

    # bad input: an answer in the page, and the app keeps serving
    page.tab("Segment")
    page.type_into("vocabulary", "")
    assert "Error: the vocabulary is empty" in page.run("segment-btn")
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((600, 800, 3), np.uint8)).save(big)
    page.upload(big)
    page.type_into("vocabulary", VOCAB)
    assert "Error: the image is too large: 800x600" in page.run("segment-btn")
    page.upload(ROOT / "densevlm_d2/assets/chelsea.jpg")
    assert "Error" not in page.run("segment-btn", "segmentation")
    assert all((shots / f).stat().st_size > 10_000 for f in ("segment.png", "side_by_side.png"))
