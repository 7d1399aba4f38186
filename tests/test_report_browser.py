"""report.html, opened from disk in a real headless Chromium: every figure shows, nothing errors."""

from __future__ import annotations

import pytest

from tests.browser import ARTIFACTS_DIR
from tests.test_report import Fixture

pytestmark = pytest.mark.browser

MAX_SCREENSHOT_HEIGHT = 16000  # px; Chromium refuses larger windows


def test_report_page_shows_every_figure(tmp_path, chromium):
    result, out = Fixture(tmp_path).build()
    chromium.get((out / "report.html").as_uri())
    images = chromium.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 22)]);"
    )
    assert len(images) == len(result["figures"])
    for alt, complete, width, src in images:
        assert complete and width > 0, f"image '{alt}' did not load"
        assert src == "data:image/png;base64,", f"image '{alt}' is not embedded"
    severe = [e["message"] for e in chromium.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    assert "Runs that did not finish" in chromium.find_element("tag name", "body").text

    ARTIFACTS_DIR.mkdir(exist_ok=True)
    height = chromium.execute_script("return document.documentElement.scrollHeight;")
    chromium.set_window_size(1400, min(height + 100, MAX_SCREENSHOT_HEIGHT))
    chromium.save_screenshot(str(ARTIFACTS_DIR / "report.png"))
