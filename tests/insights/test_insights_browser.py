"""The Insights page in a real browser: Playwright driving Debian's headless chromium.

Skips, saying why, when /usr/bin/chromium or Playwright is missing. Screenshots go to
the folder in $ATTRIBUO_SCREENSHOTS when it is set, else to the test's tmp_path (never
into the source tree).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ATTRIBUO_CHROMIUM", "/usr/bin/chromium")  # Debian's package

if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser test skipped: {CHROMIUM} not found (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="browser test skipped: playwright is not installed")

import torch  # noqa: E402

from attribuo.insights import AttributionVisualizer, Batch  # noqa: E402
from attribuo.insights.example import (  # noqa: E402
    DigitsCNN,
    build_visualizer,
    digits_split,
    load_model,
)
from attribuo.insights.features import GeneralFeature, ImageFeature, TextFeature  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LONG_NAME = "an exceptionally long class name"  # over 20 characters: may be ellipsized
CLASSES = ["airplane", "automobile", LONG_NAME, "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Records what the Content-Security-Policy refused (inline styles, scripts...).
WATCH_CSP = """
window.cspViolations = [];
document.addEventListener('securitypolicyviolation',
    (e) => window.cspViolations.push(`${e.violatedDirective} ${e.sourceFile}:${e.lineNumber}`));
"""


class SlowDigitsCNN(DigitsCNN):
    """The digits model taking 5 ms per forward pass: a request that runs for seconds."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.005)
        return super().forward(x)


def digits_dataset(batch_size: int = 8) -> list[Batch]:
    _, _, x_test, y_test = digits_split()
    return [Batch(x_test[i : i + batch_size], y_test[i : i + batch_size])
            for i in range(0, len(y_test), batch_size)]


def image_feature() -> ImageFeature:
    return ImageFeature("Digit", baseline_transforms=[torch.zeros_like], input_transforms=[])


def two_model_visualizer() -> AttributionVisualizer:
    """Two DigitsCNN (the trained one and a differently initialised one) and long class names."""
    torch.manual_seed(1)
    other = DigitsCNN().eval()
    return AttributionVisualizer(
        models=[load_model(), other], classes=CLASSES, features=[image_feature()],
        dataset=digits_dataset(), score_func=lambda out: torch.softmax(out, dim=1),
    )


def slow_visualizer() -> AttributionVisualizer:
    model = SlowDigitsCNN()
    model.load_state_dict(load_model().state_dict())
    return AttributionVisualizer(
        models=[model.eval()], classes=[str(d) for d in range(10)], features=[image_feature()],
        dataset=digits_dataset(), score_func=lambda out: torch.softmax(out, dim=1),
    )


class TwoInputs(torch.nn.Module):
    """A linear model of a 6-token "review" (one value per token) and 4 general columns."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(10, 3)

    def forward(self, tokens: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([tokens, columns], dim=1))


def text_and_general_visualizer() -> AttributionVisualizer:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(16, 6, generator=generator)
    columns = torch.randn(16, 4, generator=generator)
    labels = torch.randint(0, 3, (16,), generator=generator)
    words = ["the", "film", "was", "not", "very", "good"]
    return AttributionVisualizer(
        models=[TwoInputs().eval()], classes=["negative", "neutral", "positive"],
        features=[TextFeature("Review", None, None, lambda x: words),
                  GeneralFeature("Metadata", ["length", "year", "stars", "a long column name"])],
        dataset=[Batch((tokens[i : i + 8], columns[i : i + 8]), labels[i : i + 8]) for i in (0, 8)],
        score_func=lambda out: torch.softmax(out, dim=1),
    )


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(browser, serve):
    """``open_page(visualizer=None, width=1280) -> page``, loaded and idle (first batch shown).

    The page's base URL is ``page.base_url``.
    """
    contexts = []

    def open_(visualizer=None, width: int = 1280):
        _, url = serve(visualizer or build_visualizer())
        context = browser.new_context(viewport={"width": width, "height": 900},
                                      accept_downloads=True)
        contexts.append(context)
        context.add_init_script(WATCH_CSP)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url + "/")
        page.wait_for_selector("body[data-state=idle]")
        page.base_url = url
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page):
    return open_page()


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    folder = Path(os.environ.get("ATTRIBUO_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_idle(page) -> None:
    # a selector, not wait_for_function: the page's CSP forbids the eval that would need
    page.wait_for_selector("body[data-state=idle]")


def no_error(page) -> None:
    assert page.is_hidden("#error"), page.inner_text("#error")


def fetched_cards(page) -> list:
    """Press Fetch, wait, and return the cards (at least one, no error shown)."""
    page.click("#fetch")
    wait_idle(page)
    no_error(page)
    cards = page.query_selector_all("article.card")
    assert cards
    return cards


def no_csp_violations(page) -> None:
    assert page.evaluate("window.cspViolations") == []


def heat_maps(page) -> list[str]:
    return page.eval_on_selector_all("canvas.heatmap", "cs => cs.map(c => c.toDataURL())")


def card_ids(page) -> list[str]:
    return page.eval_on_selector_all("article.card", "cs => cs.map(c => c.dataset.id)")


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


def label_layout(page) -> list[dict]:
    """Per score row: its label, whether the label is cut, and whether it runs into the bar."""
    return page.eval_on_selector_all(".prediction", """rows => rows.map(row => {
        const label = row.querySelector('.label'), bar = row.querySelector('.bar');
        const l = label.getBoundingClientRect(), b = bar.getBoundingClientRect();
        return {text: label.textContent, title: label.title,
                cut: label.scrollWidth > label.clientWidth,
                overlaps: l.right > b.left + 0.5 && l.left < b.right, barWidth: b.width};
    })""")


def set_argument(page, name: str, value: str) -> None:
    page.fill(f"#arg-{name}", value)


def start_heavy_fetch(page) -> str:
    """Occlusion pixel by pixel, one window per forward (65 slow forwards per example) on 32
    examples; returns the job's id."""
    page.select_option("#method", "Occlusion")
    set_argument(page, "sliding_window_shapes", "1,1,1")
    set_argument(page, "strides", "1,1,1")
    set_argument(page, "perturbations_per_eval", "1")
    page.fill("#num-examples", "32")
    def is_job(response):
        return response.request.method == "POST" and response.url.endswith("/api/jobs")

    with page.expect_response(is_job) as job:
        page.click("#fetch")
    return job.value.json()["id"]


def job_state(page, ident: str) -> str:
    with urllib.request.urlopen(f"{page.base_url}/api/jobs/{ident}", timeout=10) as answer:
        return json.load(answer)["state"]


def test_first_batch_is_fetched_on_load_and_methods_switch(page, screenshot_dir):
    assert page.title() == "attribuo Insights"
    no_error(page)
    # a first batch with the default method, so that the page never opens empty
    assert page.get_attribute("#results", "data-method") == "IntegratedGradients"
    assert len(page.query_selector_all("article.card")) == 4
    assert "Integrated Gradients" in page.inner_text("article.card .made")
    assert page.query_selector("#model").is_hidden()  # one model: nothing to choose

    # filter on two classes, Integrated Gradients, fetch
    page.check("#class-filter input[value='3']")
    page.check("#class-filter input[value='8']")
    assert page.inner_text("#class-count") == "2 of 10 chosen"
    page.select_option("#method", "IntegratedGradients")
    assert page.input_value("#arg-n_steps") == "25"  # default from the server's registry
    set_argument(page, "n_steps", "20")
    page.click("#fetch")
    wait_idle(page)
    no_error(page)
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
        assert "n_steps 20" in card.query_selector(".made").inner_text()
        assert card.query_selector(".contributions .track .pos, .contributions .track .neg")
    assert all(f > 0.05 for f in coloured_fraction(page)), "heat maps are blank"
    integrated = heat_maps(page)
    page.screenshot(path=str(screenshot_dir / "insights.png"), full_page=True)

    # switch to Occlusion with a window other than the automatic one: the maps change
    page.select_option("#method", "Occlusion")
    set_argument(page, "sliding_window_shapes", "1,4,4")
    set_argument(page, "strides", "1,2,2")
    page.click("#recompute")
    wait_idle(page)
    no_error(page)
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
    no_csp_violations(page)


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
    assert page.get_attribute("section.result", "data-target-kind") == "class"
    assert heat_maps(page) != before


def test_true_label_as_target(page):
    page.select_option("#method", "Saliency")
    page.select_option("#prediction", "incorrect")  # where the label is not the top class
    page.select_option("#target", "label")
    page.fill("#num-examples", "2")
    cards = fetched_cards(page)
    for card in cards:
        truth = card.query_selector(".truth b").inner_text()
        result = card.query_selector("section.result")
        assert result.get_attribute("data-target-kind") == "label"
        assert result.query_selector(".target b").inner_text() == f"{truth} (true label)"
        top = result.query_selector(".prediction").get_attribute("data-class")
        assert top != truth  # an incorrect prediction: the target is not the top class

    # a class clicked, then the card's Label button: back to the true label
    first = page.query_selector("article.card")
    ident = first.get_attribute("data-id")
    first.query_selector(".prediction").click()
    wait_idle(page)
    card = page.query_selector(f"article.card[data-id='{ident}']")
    assert card.query_selector("section.result").get_attribute("data-target-kind") == "class"
    card.query_selector("button.label-target").click()
    wait_idle(page)
    card = page.query_selector(f"article.card[data-id='{ident}']")
    result = card.query_selector("section.result")
    assert result.get_attribute("data-target-kind") == "label"
    assert result.query_selector(".target b").inner_text().startswith(
        card.query_selector(".truth b").inner_text())
    no_csp_violations(page)


def test_cards_name_their_method_and_show_when_stale(page):
    cards = page.query_selector_all("article.card")
    assert all("Integrated Gradients (n_steps 25" in c.query_selector(".made").inner_text()
               for c in cards)
    assert page.query_selector_all("article.card.stale") == []

    page.select_option("#method", "Saliency")  # not recomputed: every card says so
    assert len(page.query_selector_all("article.card.stale")) == 4
    note = page.inner_text("article.card .stale-note")
    assert "made with Integrated Gradients" in note and "Recompute" in note

    page.select_option("#method", "IntegratedGradients")  # the same again: not stale
    assert page.query_selector_all("article.card.stale") == []
    set_argument(page, "n_steps", "30")  # an argument differs
    assert len(page.query_selector_all("article.card.stale")) == 4
    set_argument(page, "n_steps", "25")
    assert page.query_selector_all("article.card.stale") == []

    page.select_option("#method", "Saliency")
    page.click("#recompute")
    wait_idle(page)
    assert page.query_selector_all("article.card.stale") == []
    assert all(c.query_selector(".made").inner_text().startswith("Saliency")
               for c in page.query_selector_all("article.card"))
    page.select_option("#target", "label")  # the target differs from the cards' too
    assert len(page.query_selector_all("article.card.stale")) == 4
    no_csp_violations(page)


def test_models_side_by_side_with_long_class_names(open_page):
    page = open_page(two_model_visualizer())
    no_error(page)
    names = page.eval_on_selector_all("#model label", "ls => ls.map(l => l.textContent)")
    assert len(names) == 2 and len(set(names)) == 2  # unique names from the server
    assert page.eval_on_selector_all("#model input", "bs => bs.map(b => b.checked)") == [True, True]

    # search the class chips, pick the long names, fetch with both models
    page.fill("#class-search", "AUTO")
    visible = page.eval_on_selector_all(
        "#class-filter label", "ls => ls.filter(l => !l.hidden).map(l => l.dataset.class)")
    assert visible == ["automobile"]
    page.check("#class-filter input[value='automobile']")
    page.fill("#class-search", "")
    page.check(f"#class-filter input[value='{LONG_NAME}']")
    page.select_option("#method", "Saliency")
    cards = fetched_cards(page)
    for card in cards:
        columns = card.query_selector_all("section.result")
        assert [c.query_selector("h3").inner_text() for c in columns] == names
        assert [c.get_attribute("data-model") for c in columns] == ["0", "1"]
        assert columns[0].query_selector(".prediction").get_attribute("data-class") in {
            "automobile", LONG_NAME}
        assert len(card.query_selector_all("canvas.heatmap")) == 2
    rows = label_layout(page)
    assert {"automobile", LONG_NAME} <= {r["text"] for r in rows}
    for row in rows:
        assert not row["overlaps"], row
        assert row["barWidth"] > 20, row
        assert row["title"] == row["text"]
        if len(row["text"]) <= 20:
            assert not row["cut"], row  # shown whole

    # one model only: one column per card
    page.uncheck("#model input[value='1']")
    assert len(page.query_selector_all("article.card.stale")) == len(cards)  # models differ
    page.click("#fetch")
    wait_idle(page)
    no_error(page)
    assert all(len(c.query_selector_all("section.result")) == 1
               for c in page.query_selector_all("article.card"))
    page.uncheck("#model input[value='0']")
    page.click("#fetch")
    wait_idle(page)
    assert "at least one model" in page.inner_text("#error")
    no_csp_violations(page)


def test_narrow_screen_has_no_horizontal_overflow(open_page, screenshot_dir):
    page = open_page(two_model_visualizer(), width=420)
    no_error(page)
    assert len(page.query_selector_all("section.result")) == 8  # 4 examples x 2 models
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    form = page.query_selector("#controls").bounding_box()
    results = page.query_selector("#results").bounding_box()
    assert form["y"] + form["height"] <= results["y"]  # the form above the results
    assert all(not r["overlaps"] for r in label_layout(page))
    page.screenshot(path=str(screenshot_dir / "insights-narrow.png"), full_page=True)


def test_sorting_by_confidence_and_attribution_mass(page):
    page.select_option("#method", "Saliency")
    page.fill("#num-examples", "8")
    page.click("#fetch")
    wait_idle(page)
    fetched = card_ids(page)

    def firsts(attribute):
        return page.eval_on_selector_all(
            "article.card section.result:first-child",
            f"rs => rs.map(r => Number(r.dataset.{attribute}))")

    page.select_option("#sort", "confidence-asc")
    assert firsts("confidence") == sorted(firsts("confidence"))
    page.select_option("#sort", "mass-desc")
    assert firsts("mass") == sorted(firsts("mass"), reverse=True)
    assert sorted(card_ids(page)) == sorted(fetched)  # the same examples, reordered
    page.select_option("#sort", "")
    assert card_ids(page) == fetched


def test_progress_and_cancel_keep_the_cards(open_page):
    page = open_page(slow_visualizer())
    before = card_ids(page)
    assert len(before) == 4
    ident = start_heavy_fetch(page)
    page.wait_for_selector("#progress-text:text-matches('^\\\\d+ / 32$')", state="visible")
    assert page.is_visible("#cancel") and page.get_attribute("body", "data-state") == "busy"
    assert page.is_visible("#spinner") and page.is_disabled("#fetch")
    with page.expect_request(lambda r: r.method == "DELETE" and "/api/jobs/" in r.url):
        page.click("#cancel")
    wait_idle(page)
    no_error(page)
    assert "Cancelled" in page.inner_text("#notice")
    assert card_ids(page) == before  # the previous cards stay
    assert page.is_hidden("#spinner") and page.is_hidden("#cancel")
    assert job_state(page, ident) == "cancelled"

    # the server is free again: a small request is answered
    page.select_option("#method", "Saliency")
    page.fill("#num-examples", "1")
    page.click("#fetch")
    wait_idle(page)
    no_error(page)
    assert page.is_hidden("#notice")
    assert len(card_ids(page)) == 1
    no_csp_violations(page)


def test_export_json_and_png(page):
    result = page.query_selector("article.card section.result")
    with page.expect_download() as download:
        result.query_selector("a.export-json").click()
    data = json.loads(Path(download.value.path()).read_text())
    assert data["id"] == int(page.get_attribute("article.card", "data-id"))
    assert data["model"] == 0

    with page.expect_download() as download:
        result.query_selector("button.export-png").click()
    assert download.value.suggested_filename.endswith(".png")
    png = Path(download.value.path()).read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 2000
    no_csp_violations(page)


def test_leaving_the_page_cancels_its_job(open_page):
    page = open_page(slow_visualizer())
    ident = start_heavy_fetch(page)
    page.wait_for_selector("#progress", state="visible")
    assert job_state(page, ident) in {"queued", "running"}
    page.goto("about:blank")  # pagehide: the page sends a cancel beacon
    deadline = time.monotonic() + 10
    while job_state(page, ident) != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_state(page, ident) == "cancelled"


def test_text_and_general_features_with_contributions(open_page):
    page = open_page(text_and_general_visualizer())
    no_error(page)
    result = page.query_selector("article.card section.result")
    names = result.eval_on_selector_all(".contributions .name", "ns => ns.map(n => n.textContent)")
    assert names == ["Review", "Metadata"]  # one bar per input feature
    shares = result.eval_on_selector_all(".contributions .value",
                                         "vs => vs.map(v => parseFloat(v.textContent))")
    assert abs(sum(abs(v) for v in shares) - 100) <= 2  # shares of the net attribution
    tokens = result.query_selector_all(".feature-text .tokens span")
    assert [t.inner_text() for t in tokens] == ["the", "film", "was", "not", "very", "good"]
    assert any(t.evaluate("t => t.style.backgroundColor") for t in tokens)
    assert len(result.query_selector_all(".feature-general .track")) == 4
    with page.expect_download() as download:
        result.query_selector("button.export-png").click()
    assert Path(download.value.path()).read_bytes()[:8] == PNG_SIGNATURE
    no_csp_violations(page)
