"""Drive the app in headless Chromium (Selenium): the browser test's hands, and the screenshots of
docs/app.md (``python -m app.browser --url http://127.0.0.1:7860 --out docs/app``).

Needs Selenium (``make env`` installs it) and Chromium with its chromedriver
(``tools/install_extras.py`` installs Debian's ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["AppBrowser", "find_chromium", "serve"]

ROOT = Path(__file__).resolve().parents[1]


def find_chromium() -> tuple[str, str]:
    """Chromium (or Chrome) and chromedriver, or a ``FileNotFoundError`` saying how to get them."""
    browser = next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
            if shutil.which(b)
        ),
        None,
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        raise FileNotFoundError(
            "the app's browser checks need Chromium and chromedriver on PATH: `make env` installs "
            "them on Debian/Ubuntu (tools/install_extras.py: apt-get install chromium "
            "chromium-driver)"
        )
    return browser, driver


def serve(args: list[str], port: int, log: Path, timeout: float = 120) -> subprocess.Popen:
    """Start ``python -m app --port PORT *args`` from the repository root and wait until it
    answers (its output goes to ``log``); the caller terminates it."""
    import urllib.request

    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port), *args],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read(64)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"the app did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _answer_number(status: str) -> int:
    found = re.findall(r"\(answer (\d+)\)", status)
    return int(found[-1]) if found else 0


class AppBrowser:
    """One headless Chromium window on the app's page, with the actions a person takes."""

    def __init__(self, url: str, width: int = 1400, height: int = 1300, timeout: float = 90):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser, driver = find_chromium()
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            f"--window-size={width},{height}",
        ):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(driver), options=options)
        self.timeout = timeout
        self.driver.get(url)
        self.wait(lambda: self.find("#segment-btn"), "the page to load")

    # -- looking -----------------------------------------------------------------------------------
    def find(self, css: str):
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    def wait(self, condition: Callable, what: str, timeout: float | None = None):
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout or self.timeout).until(lambda _: condition())
        except Exception as e:
            raise TimeoutError(f"waited for {what}; status: {self.text('#status')!r}") from e

    def text(self, css: str) -> str:
        element = self.find(css)
        return element.text if element is not None else ""

    def value(self, elem_id: str) -> str:
        """The value of a text box or drop-down."""
        box = self.find(f"#{elem_id} textarea") or self.find(f"#{elem_id} input")
        return box.get_attribute("value") if box is not None else ""

    def image_source(self, elem_id: str) -> str:
        image = self.find(f"#{elem_id} img")
        return image.get_attribute("src") if image is not None else ""

    def resource_hosts(self) -> set[str]:
        """The hosts every resource of the page came from (the app fetches nothing outside)."""
        urls = self.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        return {u.split("/")[2] for u in urls if "://" in u}

    # -- doing -------------------------------------------------------------------------------------
    def tab(self, name: str) -> None:
        from selenium.webdriver.common.by import By

        for button in self.driver.find_elements(By.CSS_SELECTOR, "button[role='tab']"):
            if button.text.strip() == name:
                button.click()
                return
        raise KeyError(f"no tab {name!r}")

    def upload(self, path: str | Path) -> None:
        """Replace the input image by a file (through the page's own file input)."""
        before = self.image_source("input-image")
        self.find("#input-image input[type='file']").send_keys(str(Path(path).resolve()))
        self.wait(
            lambda: self.image_source("input-image") not in ("", before), "the upload to show"
        )

    def type_into(self, elem_id: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.find(f"#{elem_id} textarea") or self.find(f"#{elem_id} input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        if text:
            box.send_keys(text)
        box.send_keys(Keys.TAB)  # leave the box: the page has its value

    def _answered(self, before: str) -> bool:
        """The status line holds a new answer: its number ("(answer 7)") is above the one
        ``before`` held, and Gradio's progress text ("processing | 0.3s") is gone."""
        text = self.text("#status").strip()
        if "processing" in text or "queue" in text:
            return False
        return _answer_number(text) > _answer_number(before)

    def run(self, button: str, output: str | None = None) -> str:
        """Click ``#button`` and wait until the status line changes (and, with ``output``, until
        that image changes); returns the status."""
        before = self.text("#status")
        before_image = self.image_source(output) if output else None
        self.find(f"#{button}").click()
        self.wait(lambda: self._answered(before), f"{button} to answer")
        if output and not self.text("#status").startswith("Error"):
            self.wait(lambda: self.image_source(output) not in ("", before_image), output)
        return self.text("#status")

    def click_image(self, elem_id: str, fx: float, fy: float) -> str:
        """Click at a fraction (fx, fy) of an image's width and height; returns the new status."""
        from selenium.webdriver.common.action_chains import ActionChains

        image = self.find(f"#{elem_id} img")
        size = image.size
        dx, dy = (fx - 0.5) * size["width"], (fy - 0.5) * size["height"]
        before = self.text("#status")
        chain = ActionChains(self.driver).move_to_element_with_offset(image, int(dx), int(dy))
        chain.click().perform()
        self.wait(lambda: self._answered(before), "the click to answer")
        return self.text("#status")

    def screenshot(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        from PIL import Image

        with Image.open(path) as shot:  # 256 colours: a third of the bytes, the same to the eye
            shot.convert("RGB").quantize(256).save(path, optimize=True)
        return path

    def close(self) -> None:
        self.driver.quit()


def main(argv=None) -> int:
    """Screenshots of each view, with the page's defaults (the demo's image and models)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--out", default="docs/app")
    parser.add_argument("--box", default=None, help="the region query's box (default: none)")
    parser.add_argument("--click", nargs=2, type=float, default=None, metavar=("FX", "FY"))
    parser.add_argument("--score-class", default=None, help="the score map's class")
    args = parser.parse_args(argv)
    page = AppBrowser(args.url)
    try:
        out = Path(args.out)
        print(page.run("segment-btn", "segmentation"))
        page.screenshot(out / "segment.png")
        page.tab("Score map")
        if args.score_class:
            page.type_into("score-class", args.score_class)
        print(page.run("score-btn", "score-map"))
        page.screenshot(out / "score_map.png")
        page.tab("Region query")
        if args.click:
            print(page.click_image("query-canvas", *args.click))
        if args.box:
            page.type_into("box", args.box)
            print(page.run("box-btn", "query-region"))
        page.screenshot(out / "region_query.png")
        page.tab("Side by side")
        print(page.run("compare-btn", "compare-b"))
        page.screenshot(out / "side_by_side.png")
    finally:
        page.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
