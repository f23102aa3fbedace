"""report.html in a real headless browser: the DOM has the tables, the screenshot is a rendered page."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import BuildRun

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason="Debian's chromium is not installed "
    "(apt-get install -y chromium); the report is checked in a headless browser",
)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_dom_after_rendering_has_the_report(demo_build: BuildRun, tmp_path: Path) -> None:
    proc = _chromium(["--dump-dom", (demo_build.output / "report.html").as_uri()], tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert dom.count("<table") >= 6 and dom.count("<svg") >= 4
    for text in (
        "Accuracy",
        "INT8 simulated",
        "INT8 TensorRT network",
        "Per-layer quantization error",
        "Layers kept in float",
        "Step times",
        "GATE ",
    ):
        assert text in dom


def test_screenshot_is_a_rendered_page(demo_build: BuildRun, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    proc = _chromium(
        [f"--screenshot={shot}", "--window-size=1280,2600", (demo_build.output / "report.html").as_uri()],
        tmp_path / "profile",
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2600)
    colors = image.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 200  # text, tables and charts, not a blank or error page
    pixels = image.load()
    top = [pixels[x, y] for x in range(0, 1280, 2) for y in range(0, 120, 2)]
    badge = {(47, 158, 68), (224, 49, 49)}  # the PASS / FAIL badge colours
    assert any(p in badge for p in top), "the gate badge is not drawn at the top"
    bars = [pixels[x, y] for x in range(0, 1280, 3) for y in range(0, 2600, 3)]
    assert sum(p == (76, 110, 245) for p in bars) > 500, "no histogram bars rendered"
