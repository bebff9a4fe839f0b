"""Open the HTML report in headless chromium: no console errors, every image decodes."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fedsim.analysis import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "report_screenshot.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not installed (apt-get install -y chromium); CI installs it",
    ),
]

# The page's width, its scroll width and each table's right edge, in CSS px.
_LAYOUT = """(() => ({
  page: document.documentElement.clientWidth,
  scroll: document.documentElement.scrollWidth,
  tables: Array.from(document.querySelectorAll('table')).map(
    t => Math.ceil(t.getBoundingClientRect().right)),
}))()"""

_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images).map(i => [i.complete, i.naturalWidth]);
  const layout = LAYOUT;
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify({errors: window.__errors, imgs: imgs, layout: layout});
  document.body.appendChild(pre);
});
</script>""".replace("LAYOUT", _LAYOUT)


def _check_with_playwright(report: Path, shot: Path) -> tuple[list[str], list[list], dict]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(report.as_uri(), wait_until="load")
            imgs = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth])"
            )
            layout = page.evaluate(_LAYOUT)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return errors, imgs, layout


def _check_with_cli(report: Path, shot: Path) -> tuple[list[str], list[list], dict]:
    """Fallback without playwright: a probe script writes its findings into the DOM."""
    probed = report.with_name("probed.html")
    probed.write_text(
        report.read_text(encoding="utf-8").replace("<body>", "<body>" + _PROBE, 1), encoding="utf-8"
    )
    base = [CHROMIUM, "--headless", *ARGS, "--virtual-time-budget=10000"]
    dom = subprocess.run(
        [*base, "--window-size=1280,900", "--dump-dom", probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    start = dom.index('<pre id="probe">') + len('<pre id="probe">')
    found = json.loads(dom[start : dom.index("</pre>", start)].replace("&quot;", '"'))
    subprocess.run(
        [*base, "--window-size=1280,4000", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return found["errors"], found["imgs"], found["layout"]


@pytest.mark.timeout(300)
def test_report_renders_in_chromium(demo_sweep, tmp_path):
    report = write_report(demo_sweep, tmp_path / "report.html")
    shot = tmp_path / "report_screenshot.png"
    try:
        import playwright  # noqa: F401

        errors, imgs, layout = _check_with_playwright(report, shot)
    except ImportError:
        errors, imgs, layout = _check_with_cli(report, shot)
    assert errors == []
    # every table fits a 1280 px window: no horizontal scrolling (the "All runs" table had
    # raw column names and byte counts and overflowed)
    assert layout["scroll"] <= layout["page"], layout
    assert len(layout["tables"]) >= 5 and max(layout["tables"]) <= layout["page"], layout
    assert len(imgs) >= 6
    assert all(complete and width > 0 for complete, width in imgs), imgs
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACT.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    shutil.copyfile(shot, ARTIFACT)
