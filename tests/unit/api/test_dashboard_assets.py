"""The dashboard's files: each one the page loads is served, shipped in the wheel, and pinned."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path

from api.routes.dashboard import ASSETS

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "api" / "dashboard"


def _files() -> set[str]:
    return {str(p.relative_to(DASHBOARD)) for p in DASHBOARD.rglob("*") if p.is_file()}


def test_every_file_the_page_names_is_an_asset_and_exists() -> None:
    html = (DASHBOARD / "index.html").read_text()
    named = set(re.findall(r'(?:src|href)="/dashboard/static/([^"]+)"', html))
    for js in (DASHBOARD / "js").glob("*.js"):
        named |= {"js/" + m for m in re.findall(r'from "\./([a-z]+\.js)"', js.read_text())}
    assert named <= set(ASSETS), named - set(ASSETS)
    assert set(ASSETS) <= _files()


def test_the_wheel_ships_every_dashboard_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["api"]
    for name in _files():
        assert any(fnmatch.fnmatch("dashboard/" + name, g) for g in globs), name


def test_the_page_has_no_inline_script_or_style() -> None:
    html = (DASHBOARD / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="/dashboard/static/vendor/chart.js/chart.umd.min.js" defer>',
        '<script type="module" src="/dashboard/static/js/main.js">',
    ]
    assert "<style" not in html and " style=" not in html and "on" + "click=" not in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere


def test_the_vendored_chart_library_matches_its_pin() -> None:
    vendor = DASHBOARD / "vendor" / "chart.js"
    pin = dict(
        line.split(" ", 1)
        for line in (vendor / "PINNED").read_text().splitlines()
        if line and not line.startswith("#")
    )
    body = (vendor / pin["file"]).read_bytes()
    assert hashlib.sha256(body).hexdigest() == pin["sha256"]
    assert f"Chart.js v{pin['version']}".encode() in body[:200]
    assert "MIT License" in (vendor / "LICENSE.md").read_text()
