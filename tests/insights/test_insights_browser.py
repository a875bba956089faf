"""The Insights page in a real browser: Playwright driving Debian's headless chromium.

Skips, saying why, when /usr/bin/chromium or Playwright is missing.
Saves a screenshot to docs/insights.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ATTRIBUO_CHROMIUM", "/usr/bin/chromium")  # Debian's package
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "insights.png"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser test skipped: {CHROMIUM} not found (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="browser test skipped: playwright is not installed")

from attribuo.insights.example import build_visualizer  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(tmp_path, serve):
    _, url = serve(build_visualizer())
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(url + "/")
            page.wait_for_selector("body[data-state=idle]")
            yield page
        finally:
            context.close()


def wait_idle(page) -> None:
    page.wait_for_function("document.body.dataset.state === 'idle'")


def heat_maps(page) -> list[str]:
    return page.eval_on_selector_all("canvas.heatmap", "cs => cs.map(c => c.toDataURL())")


def coloured_fraction(page) -> list[float]:
    """Per heat map: share of pixels with a clear red or blue tint (not grey)."""
    return page.eval_on_selector_all("canvas.heatmap", """cs => cs.map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let tinted = 0;
        for (let i = 0; i < d.length; i += 4) {
            const spread = Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]);
            if (spread > 40) tinted++;
        }
        return tinted / (d.length / 4);
    })""")


def set_argument(page, name: str, value: str) -> None:
    page.fill(f"#arg-{name}", value)


def test_page_fetches_attributes_and_switches_methods(page):
    assert page.title() == "attribuo Insights"
    assert page.is_hidden("#error")

    # filter on two classes, Integrated Gradients, fetch
    page.check("#class-filter input[value='3']")
    page.check("#class-filter input[value='8']")
    page.select_option("#method", "IntegratedGradients")
    assert page.input_value("#arg-n_steps") == "25"  # default from the server's registry
    set_argument(page, "n_steps", "20")
    page.click("#fetch")
    wait_idle(page)
    assert page.is_hidden("#error"), page.inner_text("#error")
    assert page.get_attribute("#results", "data-method") == "IntegratedGradients"

    cards = page.query_selector_all("article.card")
    assert len(cards) == 4
    for card in cards:
        predictions = card.query_selector_all(".prediction")
        assert len(predictions) == 4
        assert predictions[0].get_attribute("data-class") in {"3", "8"}  # the filter held
        assert predictions[0].query_selector(".pct").inner_text().endswith("%")
        assert card.query_selector(".truth b").inner_text() in {str(d) for d in range(10)}
        assert card.query_selector("canvas.original") and card.query_selector("canvas.heatmap")
    assert all(f > 0.05 for f in coloured_fraction(page)), "heat maps are blank"
    integrated = heat_maps(page)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # switch to Occlusion with a window other than the automatic one: the maps change
    page.select_option("#method", "Occlusion")
    set_argument(page, "sliding_window_shapes", "1,4,4")
    set_argument(page, "strides", "1,2,2")
    page.click("#recompute")
    wait_idle(page)
    assert page.is_hidden("#error"), page.inner_text("#error")
    assert page.get_attribute("#results", "data-method") == "Occlusion"
    assert len(page.query_selector_all("article.card")) == 4  # the same examples
    occluded = heat_maps(page)
    assert len(occluded) == 4 and all(a != b for a, b in zip(integrated, occluded))

    set_argument(page, "sliding_window_shapes", "1,2,2")
    set_argument(page, "strides", "1,1,1")
    page.click("#recompute")
    wait_idle(page)
    assert all(a != b for a, b in zip(occluded, heat_maps(page)))

    # a bad argument: the server's message is shown on the page, the results stay
    set_argument(page, "sliding_window_shapes", "1,9,9")
    page.click("#recompute")
    wait_idle(page)
    assert page.is_visible("#error")
    assert "larger than the input" in page.inner_text("#error")
    assert len(page.query_selector_all("article.card")) == 4


def test_clicking_a_predicted_class_reattributes_it(page):
    page.select_option("#method", "Saliency")
    page.fill("#num-examples", "1")
    page.click("#fetch")
    wait_idle(page)
    before = heat_maps(page)
    second = page.query_selector_all(".prediction")[1]
    label = second.get_attribute("data-class")
    second.click()
    wait_idle(page)
    assert page.get_attribute(".prediction.active", "data-class") == label
    assert heat_maps(page) != before


def test_spinner_shows_while_working(page):
    page.select_option("#method", "IntegratedGradients")
    set_argument(page, "n_steps", "300")
    page.fill("#num-examples", "8")
    # record what the spinner and the button did while the request ran
    page.evaluate("""() => {
        window.seen = {spinner: false, disabled: false};
        new MutationObserver(() => {
            if (!document.getElementById('spinner').hidden) window.seen.spinner = true;
            if (document.getElementById('fetch').disabled) window.seen.disabled = true;
        }).observe(document.body, {attributes: true, subtree: true});
    }""")
    page.click("#fetch")
    wait_idle(page)
    assert page.evaluate("window.seen") == {"spinner": True, "disabled": True}
    assert page.is_hidden("#spinner")
    assert len(page.query_selector_all("article.card")) == 8
