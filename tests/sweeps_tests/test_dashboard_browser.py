"""optuna-dashboard in a real headless browser (Debian's chromium driven by Playwright), on a
study lr-sweeps ran: the study page shows our graphs, the note our leaderboard, and a trial's
page its learning-rate curve image. Screenshots land in the test's tmp dir."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from test_results import png_size, run_study, start_dashboard, svg_polylines

from storage.optuna_internals import study_id_of

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
# No sandbox as root; no background traffic (this machine's network is closed).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Skips with the reason when chromium is missing, unless SWEEPS_REQUIRE_BROWSER is set
    (as in CI), where that is a failure."""
    if shutil.which(CHROMIUM) is None:
        reason = f"{CHROMIUM} not found (apt-get install chromium; make test does as root)"
        if os.environ.get("SWEEPS_REQUIRE_BROWSER"):
            pytest.fail(f"{reason}, and SWEEPS_REQUIRE_BROWSER is set")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def test_dashboard_shows_graphs_note_and_each_trials_lr_curve(
    tmp_path: Path, browser: object
) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    run_study(tmp_path, url)
    study = optuna.load_study(study_name="t", storage=url)
    best = study.best_trial
    proc, port = start_dashboard(tmp_path, url)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        base = f"http://127.0.0.1:{port}/dashboard/studies/{study_id_of(study)}"

        page.goto(base)
        for title in (
            "Learning rate of the best trial per family",
            "Best value by schedule family (maximize)",
            "Value against a schedule parameter (COMPLETE trials)",
        ):
            expect(page.get_by_text(title)).to_be_visible(timeout=30_000)
        page.screenshot(path=tmp_path / "study.png", full_page=True)

        page.goto(f"{base}/note")
        expect(page.get_by_text("Leaderboard by schedule family")).to_be_visible(timeout=30_000)
        expect(page.get_by_text(f"{best.value:.4f}").first).to_be_visible()
        page.screenshot(path=tmp_path / "note.png", full_page=True)

        page.goto(f"{base}/trials?numbers={best.number}")
        expect(page.get_by_text(f"trial-{best.number}-curves.svg")).to_be_visible(timeout=30_000)
        image = page.locator("img[src*='/artifacts/']").first
        expect(image).to_be_visible()
        # The image really loaded, and the server hands out the SVG the worker wrote.
        assert page.evaluate("img => img.naturalWidth", image.element_handle()) == 720
        response = page.request.get(f"http://127.0.0.1:{port}{image.get_attribute('src')}")
        assert response.headers["content-type"].startswith("image/svg+xml")
        assert svg_polylines(response.text())[0] == ("720", "448")
        page.screenshot(path=tmp_path / "trial.png", full_page=True)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    for shot in ("study.png", "note.png", "trial.png"):
        assert png_size((tmp_path / shot).read_bytes())[0] >= 1400
