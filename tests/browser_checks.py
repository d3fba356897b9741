"""What the browser tests of the app's actions check at the size and colour scheme each is given.

Each action test runs once, at one of 1280 or 390 px and in the light or the dark scheme, chosen
so that together they cover the four: running each at all four would cost the suite minutes.
At its size a test checks the page with tests/test_browser_layout.py's check_page (no sideways
scroll, readable text and badges) and that the controls it uses are shown inside the viewport.

Screenshots go to the artifacts folder; with HELIOS_REFRESH_SCREENSHOTS=1 in the environment
the ones the README shows are also written to docs/screenshots/<name>.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect
from test_browser_layout import WIDTHS, check_page

from conftest import REPO_ROOT

DOCS_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
REFRESH_VARIABLE = "HELIOS_REFRESH_SCREENSHOTS"


def shown_at(width: int, scheme: str) -> pytest.MarkDecorator:
    """Mark a test so that its `page` has this viewport width and colour scheme."""
    viewport = {"width": width, "height": WIDTHS[width]}
    return pytest.mark.browser_context_args(viewport=viewport, color_scheme=scheme)


def assert_inside(page: Page, *controls: Locator) -> None:
    """Each control is visible and lies within the viewport's width (nothing to scroll to)."""
    width = page.evaluate("window.innerWidth")
    for control in controls:
        expect(control).to_be_visible()
        box = control.bounding_box()
        assert box is not None, control
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (control, box, width)


def check_view(
    page: Page, name: str, width: int, scheme: str, artifacts: Path, *controls: Locator
) -> dict:
    """The page fits and reads at this size and scheme, and its controls are within reach."""
    seen = check_page(page, name, width, scheme, artifacts)
    assert_inside(page, *controls)
    return seen


def save_screenshot(page: Page, artifacts: Path, name: str, docs: str | None = None) -> None:
    """Save the page as artifacts/<name>.png; also as docs/screenshots/<docs>.png when asked to
    refresh the README's screenshots."""
    shot = artifacts / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    if docs and os.environ.get(REFRESH_VARIABLE) == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOTS / f"{docs}.png")
