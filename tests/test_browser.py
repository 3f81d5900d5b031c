"""Every page of the built book, opened in headless Chromium with no network.

An offline reader (a laptop on a train, a locked-down lab machine) gets exactly
this: the site served from disk and nothing else. The browser is Debian's
``chromium`` driven through ``chromedriver`` (`make browser` installs both); its
host resolver is told that every name except 127.0.0.1 does not exist, so a page
that needs a CDN fails here as it would for that reader. Asserted on every page:
no console errors, every formula typeset by MathJax, every image loaded at
2x density with a real alt text, no code cell or output wider than its column;
on the assignments page every link resolves and every zip holds a notebook.
A screenshot of each page goes to _build/screenshots/ (top of the page, and the
first figure when there is one).
"""

from __future__ import annotations

import functools
import http.server
import io
import re
import shutil
import threading
import urllib.request
import zipfile
from pathlib import Path

import pytest

from book_site import REPO, built_site, chapter_files, toc_files

pytestmark = pytest.mark.book
SHOTS = REPO / "_build" / "screenshots"
WIDTH, HEIGHT = 1280, 1000  # a laptop screen

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("Debian's chromium and chromium-driver are not installed and could not be "
                "installed here (`make browser` needs root and apt-get): the browser checks of "
                "the book did NOT run", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in requirements.txt")

# Runs in the page once it has loaded: waits for MathJax and every image, then
# measures. Returns a dict (see `visit`).
MEASURE_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  document.querySelectorAll('img').forEach(img => { img.loading = 'eager'; });
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  await Promise.all(Array.from(document.images).map(img => img.complete ? null :
      new Promise(r => { img.onload = img.onerror = r; })));
  const main = document.querySelector('main') || document.body;
  const out = {};
  out.mathTotal = main.querySelectorAll('.math').length;
  out.untypeset = Array.from(main.querySelectorAll('.math'))
      .filter(el => !el.querySelector('mjx-container')).map(el => el.textContent.slice(0, 80));
  out.mathErrors = Array.from(main.querySelectorAll('mjx-merror'))
      .map(el => el.getAttribute('data-mjx-error') || el.textContent.slice(0, 80));
  // raw TeX left in the prose (code and pre blocks may legitimately show backslashes)
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  out.rawTex = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest('pre, code, script, style, mjx-container, .math')) continue;
    if (/\\\(|\\\[|\\frac|\$\$/.test(n.textContent)) out.rawTex.push(n.textContent.trim().slice(0, 80));
  }
  out.images = Array.from(main.querySelectorAll('img')).map(img => ({
      src: img.getAttribute('src').slice(0, 80), alt: img.alt, ok: img.complete && img.naturalWidth > 0,
      natural: img.naturalWidth, shown: img.getBoundingClientRect().width,
      svg: /\.svg($|\?)/.test(img.src)}));
  out.wide = Array.from(main.querySelectorAll('div.cell pre, div.highlight pre'))
      .filter(pre => pre.scrollWidth > pre.clientWidth + 1)
      .map(pre => ({over: pre.scrollWidth - pre.clientWidth,
                    line: pre.textContent.split('\n').reduce((a, b) => b.length > a.length ? b : a, '')
                              .slice(0, 120)}));
  out.links = Array.from(main.querySelectorAll('a[href]')).map(a => a.href);
  out.downloads = Array.from(document.querySelectorAll('a[href$=".ipynb"]')).map(a => a.href);
  out.figures = main.querySelectorAll('figure img').length;
  done(out);
})().catch(e => done({error: String(e)}));
"""


@pytest.fixture(scope="module")
def server():
    site = built_site()
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output to the failures
        pass


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", "--no-first-run",
                "--disable-background-networking", "--disable-extensions",
                # offline: no host name resolves except the local server's address
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(server, browser) -> dict[str, dict]:
    """Visit every page once; returns {page: measurements and console log}."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return {name: visit(browser, server, name) for name in toc_files()}  # index.html only redirects


def visit(driver, server: str, name: str) -> dict:
    driver.get(f"{server}/{name}.html")
    result = driver.execute_async_script(MEASURE_JS)
    assert "error" not in result, f"{name}: measuring script failed: {result['error']}"
    result["console"] = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    slug = name.replace("/", "_")
    driver.save_screenshot(str(SHOTS / f"{slug}.png"))
    if result["figures"]:
        driver.execute_script("document.querySelector('main figure img').scrollIntoView()")
        driver.save_screenshot(str(SHOTS / f"{slug}-figure.png"))
    return result


def test_no_console_errors(pages):
    bad = {p: [e["message"][:200] for e in r["console"]] for p, r in pages.items() if r["console"]}
    assert not bad, f"console errors (or failed loads) on: {bad}"


def test_every_formula_is_typeset(pages):
    assert sum(r["mathTotal"] for r in pages.values()) > 100, "too few formulas: is math found?"
    bad = {p: r["untypeset"][:3] + r["rawTex"][:3] + r["mathErrors"][:3]
           for p, r in pages.items() if r["untypeset"] or r["rawTex"] or r["mathErrors"]}
    assert not bad, f"formulas left as raw TeX or with TeX errors: {bad}"


def test_every_image_loads_sharp_and_described(pages):
    for page, r in pages.items():
        for img in r["images"]:
            assert img["ok"], f"{page}: image {img['src']} did not load"
            alt = img["alt"].strip()
            looks_like_a_path = re.search(r"\.(png|svg|jpe?g)\b|_images|_build", alt)
            assert len(alt.split()) >= 4 and not looks_like_a_path, \
                f"{page}: image {img['src']} has no describing alt text: {alt!r}"
            if not img["svg"] and img["shown"] > 0:
                density = img["natural"] / img["shown"]
                assert density >= 1.9, (f"{page}: image {img['src']} has {density:.1f} image pixels "
                                        f"per screen pixel; render it at 2x (book_style)")


def test_chapters_have_numbered_figures(pages):
    for page in chapter_files():
        assert pages[page]["figures"] >= 1, f"{page}: no {{glue:figure}} figure"


def test_no_code_cell_is_wider_than_its_column(pages):
    bad = {p: r["wide"][:3] for p, r in pages.items() if r["wide"]}
    assert not bad, f"code cells or outputs that scroll sideways (over by px, longest line): {bad}"


def test_chapters_offer_their_notebook(pages, server):
    for page in chapter_files():
        links = pages[page]["downloads"]
        assert links, f"{page}: no .ipynb download"
        with urllib.request.urlopen(links[0]) as f:
            assert b'"cells"' in f.read(), f"{page}: {links[0]} is not a notebook"


def test_assignments_page_links_resolve(pages, server):
    links = pages["book/assignments"]["links"]
    zips = [u for u in links if u.endswith(".zip")]
    wanted = sorted(p.name for p in (REPO / "assignments").iterdir() if p.is_dir())
    assert sorted(u.rsplit("/", 1)[1][:-4] for u in zips) == wanted, f"zips {zips} != {wanted}"
    for url in links:
        if not url.startswith(server):
            continue  # the page links nothing outside the site except the repository
        with urllib.request.urlopen(url.split("#")[0]) as f:
            body = f.read()
            assert f.status == 200, f"{url}: HTTP {f.status}"
        if url.endswith(".zip"):
            names = zipfile.ZipFile(io.BytesIO(body)).namelist()
            assert any(n.endswith(".ipynb") for n in names), f"{url} holds no notebook: {names}"


def test_a_figure_enlarges_on_click(pages, browser, server):
    page = next(p for p in chapter_files() if pages[p]["figures"])
    browser.get(f"{server}/{page}.html")
    shown = browser.execute_script(
        "const img = document.querySelector('main figure img'); img.scrollIntoView(); img.click();"
        "const box = document.querySelector('.course-lightbox img');"
        "return box ? [box.getBoundingClientRect().width, img.getBoundingClientRect().width] : null;")
    assert shown, f"{page}: clicking a figure opened no enlarged view"
    assert shown[0] > shown[1], f"{page}: the enlarged figure ({shown[0]} px) is not larger ({shown[1]} px)"
