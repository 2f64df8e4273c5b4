"""A person in a real browser (Playwright driving Debian's Chromium, headless) clicks through all four tabs.

Screenshots of each tab go to test-artifacts/screenshots/ (ignored by git). With
SENTENCE_LAB_UPDATE_SCREENSHOT=1 the Embed tab's also replaces assets/screenshot.png (the README's).
Without /usr/bin/chromium the tests skip, unless SENTENCE_LAB_REQUIRE_BROWSER=1 (CI): then they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.app_server import ARTIFACTS, ROOT, running_app

pytestmark = [pytest.mark.app, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_BROWSER_ENV = "SENTENCE_LAB_REQUIRE_BROWSER"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ARTIFACTS / "screenshots"
WAIT_MS = 120_000  # generous: the machine may be busy training something else

POINTS_JS = """sel => { const g = document.querySelector(sel + ' .js-plotly-plot');
  return g && g.data ? g.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : 0; }"""
TRACE_TYPES_JS = """sel => { const g = document.querySelector(sel + ' .js-plotly-plot');
  return g && g.data ? g.data.map(t => t.type) : []; }"""


def _missing(message: str) -> None:
    if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_BROWSER_ENV}=1)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -r requirements-dev.txt)")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server():
    with running_app("app-server-browser") as server:
        yield server


@pytest.fixture
def page(browser, server):
    """A fresh visitor; fails the test if the page asks anything of a host other than the app's."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    outside = []
    page.on("request", lambda r: outside.append(r.url) if urlparse(r.url).hostname not in (None, "127.0.0.1") and
            urlparse(r.url).scheme in ("http", "https", "ws", "wss") else None)
    page.goto(server.url)
    yield page
    context.close()
    assert not outside, f"the page reached outside the app (it must work offline): {outside[:5]}"


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_a_visitor_clicks_through_all_four_tabs(page, tmp_path):
    from playwright.sync_api import expect

    # Embed & compare: the examples are drawn on arrival; the visitor types their own and compares.
    expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible()
    page.locator("#embed-text textarea").fill("The weather is lovely today.\nIt is sunny and warm outside.\n"
                                              "The train was late again.\nMy laptop will not start.")
    page.locator("#compare-btn").click()
    expect(page.locator("#pairs")).to_contain_text("“The weather is lovely today.” and “It is sunny and warm outside.”")
    expect(page.locator("#heatmap")).to_contain_text("1. The weather is lovely")  # cut to fit a phone
    assert page.evaluate(TRACE_TYPES_JS, "#heatmap") == ["heatmap"]
    expect(page.locator("#embed-info")).to_contain_text("384 numbers")
    expect(page.locator("#sentence-map")).to_contain_text("4. My laptop will not start.")
    page.locator("#normalize input[type=checkbox]").uncheck()  # the scores change with normalisation
    expect(page.locator("#pairs")).to_contain_text("Highest score")
    page.locator("#normalize input[type=checkbox]").check()
    expect(page.locator("#pairs")).to_contain_text("Most alike")
    page.wait_for_timeout(500)  # let plotly finish drawing before the picture
    embed_shot = shot(page, "1-embed")
    if os.environ.get("SENTENCE_LAB_UPDATE_SCREENSHOT") == "1":  # the README's picture
        shutil.copyfile(embed_shot, ROOT / "assets" / "screenshot.png")

    # Classify + sentiment with the shipped model.
    open_tab(page, "Classify")
    expect(page.locator("#model-note")).to_contain_text("the shipped model")
    page.locator("#classify-text textarea").fill("The goalkeeper saved a penalty in the final minute.\n"
                                                 "The company's profits collapsed, a terrible quarter.")
    page.locator("#classify-btn").click()
    expect(page.locator("#classify-table")).to_contain_text("Sports")
    expect(page.locator("#classify-table")).to_contain_text("negative")
    expect(page.locator("#classify-plot .js-plotly-plot")).to_be_visible()
    assert page.evaluate(TRACE_TYPES_JS, "#classify-plot").count("bar") == 4
    shot(page, "2-classify")

    # Train: a long run on purpose, watched while the curve grows, then stopped.
    open_tab(page, "Train")
    expect(page.locator("#param-count")).to_contain_text("Trainable parameters: 1,925 of")
    expect(page.locator("#model-file")).to_be_disabled()  # nothing to download before a run
    # Long enough that Stop, not early stopping, ends it: the most rows, small steps, many epochs
    # (a short run at a high rate finished by early stopping in 8 s under load, before Stop landed).
    page.locator("#preset").get_by_label("Nothing frozen: train everything").check()  # the encoder trains: a long run
    for field, value in (("#size", "1000"), ("#epochs", "100"), ("#batch-size", "4"), ("#lr", "0.0005")):
        box = page.locator(f"{field} input[type=number]")
        box.fill(value)
        box.press("Enter")
    page.locator("#start-btn").click()
    expect(page.locator("#train-status")).to_contain_text("Training")
    page.wait_for_function(f"({POINTS_JS})('#loss-plot') > 0")
    first = page.evaluate(POINTS_JS, "#loss-plot")
    page.wait_for_function(f"({POINTS_JS})('#loss-plot') > {first}")  # the curve grows while the run goes on
    expect(page.locator("#stop-btn")).to_be_enabled()
    page.locator("#stop-btn").click()
    expect(page.locator("#train-status")).to_contain_text("Stopped")
    with page.expect_download() as download:  # the visitor keeps their model
        page.locator("#model-file").click()
    assert download.value.suggested_filename == "sentence-lab-model.zip"
    with zipfile.ZipFile(download.value.path()) as archive:
        assert {"sentence-lab-model/config.json", "sentence-lab-model/heads.safetensors",
                "sentence-lab-model/README.md"} <= set(archive.namelist())
    # The same model as a sentence-transformers folder and as one ONNX graph.
    for choice, name, inside in (("ONNX", "sentence-lab-onnx", "model.onnx"),
                                 ("sentence-transformers", "sentence-lab-st", "modules.json")):
        page.locator("#download-format").get_by_label(choice, exact=True).check()
        expect(page.locator("#download-note")).to_contain_text(f"Ready: {name}.zip", timeout=120_000)
        with page.expect_download() as download:
            page.locator("#model-file").click()
        assert download.value.suggested_filename == f"{name}.zip"
        with zipfile.ZipFile(download.value.path()) as archive:
            assert {f"{name}/{inside}", f"{name}/README.md", f"{name}/sentence_lab.json"} <= set(archive.namelist())
    expect(page.locator("#start-btn")).to_be_enabled()
    assert page.evaluate(POINTS_JS, "#loss-plot") > first
    shot(page, "3-train")

    # The stopped run's model is now this visitor's model.
    open_tab(page, "Classify")
    expect(page.locator("#model-note")).to_contain_text("your model")
    page.locator("#classify-text textarea").fill("The striker scored twice.\nShares fell after weak earnings.")
    page.locator("#classify-btn").click()
    done = """() => { const t = document.querySelector('#classify-table').innerText;
                      return t.includes("The striker scored twice.") && !/processing|queue|[0-9]s\\n/.test(t); }"""
    page.wait_for_function(done)
    mine = page.locator("#classify-table tbody").inner_text()
    # The model picker: the shipped model, and back to the run, whose answers come back as they were.
    page.locator("#model-picker input").click()
    page.get_by_role("option", name="The shipped model").click()
    expect(page.locator("#model-note")).to_contain_text("the shipped model")
    page.locator("#model-picker input").click()
    page.get_by_role("option", name="#1 · nothing frozen").click()
    expect(page.locator("#model-note")).to_contain_text("your model")
    page.locator("#classify-btn").click()
    page.wait_for_function(done)
    assert page.locator("#classify-table tbody").inner_text() == mine

    # A spreadsheet scored through the page with the shipped model: the file the command line writes, row for row.
    page.locator("#model-picker input").click()
    page.get_by_role("option", name="The shipped model").click()
    expect(page.locator("#model-note")).to_contain_text("the shipped model")
    from core.datasets import make_synthetic

    source = tmp_path / "reviews.csv"  # 1,000 rows: three of ours, then synthetic ones
    texts = ["The striker scored twice.", "Shares fell after weak earnings.", "This lasagna recipe needs more garlic.",
             *make_synthetic(997, seed=1).texts]
    source.write_text("id,comment\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts, 1)), encoding="utf-8")
    page.get_by_text("Score your own spreadsheet (CSV)").click()
    page.locator("#score-file input[type=file]").set_input_files(str(source))
    expect(page.locator("#score-column input")).to_have_value("comment")
    page.locator("#score-btn").click()
    expect(page.locator("#score-note")).to_contain_text("Scored 1,000 of 1,000 rows")
    expect(page.locator("#score-preview")).to_contain_text("Unsure (")
    with page.expect_download() as download:
        page.locator("#score-out a").first.click()
    cli = tmp_path / "cli.csv"
    subprocess.run([sys.executable, "-m", "core", "predict", "--csv", str(source), "--out", str(cli),
                    "--text-column", "comment", "--quiet"], check=True, cwd=ROOT)
    assert Path(download.value.path()).read_bytes() == cli.read_bytes()
    shot(page, "2b-scored")

    open_tab(page, "Guide")
    expect(page.get_by_role("heading", name="What is an embedding?")).to_be_visible()
    expect(page.locator("#guide")).to_contain_text("Gradual unfreezing")
    shot(page, "4-guide")


def test_bad_input_shows_a_clear_message_and_the_page_keeps_working(page, tmp_path):
    from playwright.sync_api import expect

    expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible()
    page.locator("#embed-text textarea").fill("   ")
    page.locator("#compare-btn").click()
    expect(page.get_by_text("Type at least one sentence (one per line).").first).to_be_visible()
    # What answered the previous input is gone: nothing on screen seems to answer the refused one.
    expect(page.locator("#heatmap")).to_contain_text("the last input was refused")
    expect(page.locator("#sentence-map")).to_contain_text("the last input was refused")
    expect(page.locator("#pairs")).not_to_contain_text("Most alike")
    open_tab(page, "Classify")
    page.locator("#classify-btn").click()
    expect(page.locator("#classify-table")).to_contain_text("Sports")
    page.locator("#classify-text textarea").fill("   ")
    page.locator("#classify-btn").click()
    expect(page.locator("#classify-plot")).to_contain_text("the last input was refused")
    expect(page.locator("#classify-table")).not_to_contain_text("Sports")

    # Gradio's "queue: 2/3 | 4.1/43.1s" reads as words in its place.
    words = "text => window.sentenceLabQueueWords(text)"
    assert page.evaluate(words, "queue: 2/3 | 4.1/43.1s") == "You are 2nd in line, about 39 s"
    assert page.evaluate(words, "queue: 1/1 | 0.4s") == "You are next in line"
    assert page.evaluate(words, "processing | 3.2/10.0s") == "Working… 3 s of about 10 s"
    shown = page.evaluate("""() => { const el = document.createElement('div'); el.className = 'meta-text';
        el.textContent = 'queue: 3/4 | 1.0/21.0s'; document.body.appendChild(el);
        return new Promise(done => setTimeout(() => done(getComputedStyle(el, '::after').content), 300)); }""")
    assert shown == '"You are 3rd in line, about 20 s"'

    open_tab(page, "Train")
    box = page.locator("#lr input")
    box.fill("0")
    box.press("Tab")
    page.locator("#start-btn").click()
    expect(page.get_by_text("Learning rate must be > 0, got 0").first).to_be_visible()
    expect(page.locator("#start-btn")).to_be_enabled()

    box.fill("0.02")
    box.press("Tab")
    broken = tmp_path / "reviews.csv"
    broken.write_text("text,label,sentiment\nA fine film.,Film,0.9\nA dull film.,Film,abc\n")
    page.get_by_label("My CSV file").check()
    page.locator("#csv-file input[type=file]").set_input_files(str(broken))
    expect(page.locator("#data-note")).to_contain_text("reviews.csv: row 3, column 'sentiment': 'abc' is not a number")
    page.locator("#start-btn").click()
    expect(page.get_by_text("row 3, column 'sentiment'").first).to_be_visible()
    shot(page, "5-bad-input")

    open_tab(page, "Compare")
    page.locator("#embed-text textarea").fill("Still working?\nYes, it still works.")
    page.locator("#compare-btn").click()
    expect(page.locator("#heatmap")).to_contain_text("2. Yes, it still works.")


def test_a_visitor_compares_three_strategies_and_uses_the_second(page):
    from playwright.sync_api import expect

    expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible()
    open_tab(page, "Train")
    for field, value in (("#size", "60"), ("#epochs", "2")):  # small: three runs, two of them train the encoder
        box = page.locator(f"{field} input[type=number]")
        box.fill(value)
        box.press("Enter")
    boxes = page.locator("#compare-presets")
    for label, ticked in (("Encoder frozen", True), ("Nothing frozen", True), ("Topic head frozen", False),
                          ("Sentiment head frozen", True)):
        box = boxes.get_by_label(label, exact=True)
        box.check() if ticked else box.uncheck()
    page.locator("#compare-strategies-btn").click()
    table = page.locator("#runs-table")
    expect(table).to_contain_text("sentiment head frozen", timeout=300_000)  # the third, in the page's order
    for row in ("#1", "nothing frozen", "#2", "encoder frozen", "#3"):
        expect(table).to_contain_text(row)
    expect(page.locator("#train-status")).to_contain_text("Done")
    page.wait_for_function("() => (document.querySelector('#runs-plot .js-plotly-plot') || {}).data?.length === 3")
    shot(page, "6-compare")

    page.locator("#run-choice input").click()
    page.locator("ul[role=listbox] li", has_text="#2 ·").click()  # the second run: heads on the frozen encoder
    page.locator("#use-run-btn").click()
    open_tab(page, "Classify")
    expect(page.locator("#model-note")).to_contain_text("run #2: encoder frozen")
    page.locator("#classify-btn").click()
    expect(page.locator("#classify-table")).to_contain_text("Sports")


# -- every screen: a phone and a desktop, light and dark ---------------------------------------------

LONG_SENTENCE = ("The committee published its long-awaited report on the regional economy this morning, " * 25)[:2000]
TWENTY = "\n".join([LONG_SENTENCE] + [f"Sentence number {i} is about {topic}." for i, topic in
                                      zip(range(2, 21), ["football", "shares", "rockets", "elections"] * 5)])
KEY_COLUMNS = {"#classify-table": ["Topic", "Sentiment"], "#pairs-table": ["Score"],
               "#metrics-table": ["Epoch"], "#runs-table": ["Run"]}

FITS_JS = """keys => {
  const vw = window.innerWidth, problems = [];
  const wide = document.scrollingElement.scrollWidth;
  if (wide > vw) problems.push(`the page is ${wide} px wide in a ${vw} px window`);
  for (const [table, columns] of Object.entries(keys)) {
    const el = document.querySelector(table);
    if (!el || !el.offsetParent) continue;  // not on this tab, or in a closed accordion
    for (const name of columns) {
      const th = [...el.querySelectorAll('th')].find(h => h.innerText.trim() === name);
      if (!th) continue;  // the column is not there yet (an empty table)
      const r = th.getBoundingClientRect();
      if (r.left < 0 || r.right > vw + 1) problems.push(`${table} column ${name} lies at ${Math.round(r.left)}..${Math.round(r.right)} px`);
    }
  }
  return problems; }"""
# Plots follow the mode: the paper is transparent over the page's own background, the text contrasts with it.
PLOT_COLOURS_JS = """() => {
  const rgba = c => { const m = (c.match(/[\\d.]+/g) || ['0', '0', '0', '0']).map(Number);
                      return {l: (0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2]) / 255, a: m.length > 3 ? m[3] : 1}; };
  const behind = el => { for (let e = el; e; e = e.parentElement) { const c = rgba(getComputedStyle(e).backgroundColor);
                          if (c.a > 0.5) return c.l; } return 1; };
  return [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.offsetParent).map(p => {
    const svg = p.querySelector('svg.main-svg'), own = rgba(getComputedStyle(svg).backgroundColor);
    const text = p.querySelector('.gtitle, .annotation-text, .xtick text');
    return {plot: p.closest('[id]').id, paper: own.a > 0.5 ? own.l : behind(p.parentElement),
            text: text ? rgba(getComputedStyle(text).fill).l : null}; }); }"""


def _looks_right(page, scheme: str, where: str) -> None:
    page.wait_for_timeout(600)  # plotly draws after the data lands
    problems = page.evaluate(FITS_JS, KEY_COLUMNS)
    for plot in page.evaluate(PLOT_COLOURS_JS):
        dark_paper = plot["paper"] < 0.35
        if dark_paper != (scheme == "dark"):
            problems.append(f"{plot['plot']} has a {'dark' if dark_paper else 'light'} background in {scheme} mode")
        if plot["text"] is not None and abs(plot["text"] - plot["paper"]) < 0.4:
            problems.append(f"{plot['plot']}'s text does not stand out from its background ({plot})")
    assert not problems, f"{where}: {problems}"


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", [(390, 844), (1440, 900)], ids=["phone", "desktop"])
def test_every_tab_fits_the_screen_and_follows_the_mode_before_and_after_its_action(browser, server, size, scheme):
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{server.url}?__theme={scheme}")
    tag = f"{size[0]}-{scheme}"
    try:
        # Every tab's button is in view: none hides behind an overflow menu.
        for name in ("Compare", "Classify", "Train", "Guide"):
            expect(page.get_by_role("tab", name=name)).to_be_visible()

        expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible()
        _looks_right(page, scheme, "Compare, on arrival")
        page.locator("#embed-text textarea").fill(TWENTY)
        page.locator("#compare-btn").click()
        expect(page.locator("#pairs")).to_contain_text("Most alike")
        expect(page.locator("#embed-info")).to_contain_text("Cut short")
        page.get_by_text("All pairs, ranked").click()
        expect(page.locator("#pairs-table")).to_contain_text("Score")
        _looks_right(page, scheme, "Compare, 20 sentences with a 2,000-character one")
        shot(page, f"fit-{tag}-compare")

        open_tab(page, "Classify")
        _looks_right(page, scheme, "Classify, before")
        page.locator("#classify-text textarea").fill(TWENTY)
        page.locator("#classify-btn").click()
        expect(page.locator("#classify-table")).to_contain_text("Sentence number 2 ")  # a virtual table: rows in view
        _looks_right(page, scheme, "Classify, 20 sentences with a 2,000-character one")
        shot(page, f"fit-{tag}-classify")

        open_tab(page, "Train")
        _looks_right(page, scheme, "Train, before")
        page.locator("#start-btn").click()
        expect(page.locator("#train-status")).to_contain_text("Done")
        _looks_right(page, scheme, "Train, after a run")
        shot(page, f"fit-{tag}-train")

        open_tab(page, "Guide")
        _looks_right(page, scheme, "Guide")
        shot(page, f"fit-{tag}-guide")
    finally:
        context.close()
