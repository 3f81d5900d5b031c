"""The book builds with warnings as errors, every page in the table of contents is
rendered with its figures, and the chapters follow book/CONVENTIONS.md: code that
fits the column, numbered figures with alt text, citations that resolve, glossary
links, self-check exercises, numbers glued from the run, nothing from a CDN."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from book_site import REPO, built_site, chapter_files, toc_files

pytestmark = pytest.mark.book
MAX_CODE_CHARS = 80  # what the page column shows without scrolling (course.css, 1280 px screen)
CODE_CELL = re.compile(r"```\{code-cell\}[^\n]*\n(.*?)```", re.S)


def source(page: str) -> str:
    return (REPO / f"{page}.md").read_text()


@pytest.fixture(scope="module")
def built() -> Path:
    return built_site()


# ---- the sources (no build needed) -------------------------------------------------


@pytest.mark.parametrize("page", chapter_files())
def test_code_lines_fit_the_column(page):
    long = [(len(line), line.strip()[:60]) for cell in CODE_CELL.findall(source(page))
            for line in cell.split("\n") if len(line) > MAX_CODE_CHARS]
    assert not long, f"{page}: code lines over {MAX_CODE_CHARS} characters: {long[:5]}"


@pytest.mark.parametrize("page", chapter_files())
def test_figures_are_glued_numbered_and_described(page):
    text = source(page)
    assert "plt.show()" not in text.replace(":tags: [skip-execution]", ""), \
        f"{page}: a figure shown with plt.show(); end the cell with glue_figure(name)"
    assert not re.search(r"^\*\*Figure \d", text, re.M), f"{page}: a hand-numbered caption"
    assert not re.search(r"(?<![`{])\bFigure \d+\b", text), f"{page}: 'Figure N' typed; use {{numref}}"
    glued = re.findall(r'glue_figure\(\s*"([^"]+)"', text)
    pasted = re.findall(r"```\{glue:figure\} (\S+)\n:name: (\S+)\n:alt: (.+)\n", text)
    assert glued, f"{page}: no figure"
    assert sorted(glued) == sorted(p[0] for p in pasted), \
        f"{page}: glued {glued} but pasted {[p[0] for p in pasted]} (each needs :name: and :alt:)"
    for key, name, alt in pasted:
        assert name.startswith("fig-"), f"{page}: figure {key} label {name!r} must start with fig-"
        assert len(alt.split()) >= 6, f"{page}: figure {key} alt text is too short: {alt!r}"


def test_citations_resolve_to_the_bibliography():
    bib = (REPO / "book" / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, re.M))
    for paper in ("long2015fcn", "ronneberger2015unet", "girshick2014rcnn", "girshick2015fast",
                  "ren2015faster", "lin2017fpn", "redmon2016yolo", "liu2016ssd", "lin2017focal",
                  "tian2019fcos", "carion2020detr", "he2017maskrcnn", "kirillov2019panoptic",
                  "zhou2016cam", "selvaraju2017gradcam", "simonyan2014saliency",
                  "zeiler2014visualizing", "goodfellow2015fgsm"):
        assert paper in keys, f"references.bib lacks {paper}"
    for entry in re.findall(r"^@\w+\{.*?^\}", bib, re.M | re.S):
        for field in ("author", "title", "year"):
            assert re.search(rf"^\s*{field}\s*=", entry, re.M), f"{entry[:40]}: no {field}"
    for page in toc_files():
        for group in re.findall(r"\{cite:[pt]\}`([^`]+)`", source(page)):
            for key in group.split(","):
                assert key.strip() in keys, f"{page}: cites {key!r}, not in references.bib"


def test_glossary_has_the_course_terms_and_chapters_link_them():
    glossary = source("book/glossary")
    for term in ("anchor", "proposal", "RoI", "IoU", "NMS", "AP", "mAP", "PQ", "mIoU",
                 "transposed convolution", "skip connection", "saliency map", "Grad-CAM"):
        assert re.search(rf"^{re.escape(term)}$", glossary, re.M), f"glossary lacks {term!r}"
    for page in chapter_files():
        assert "{term}`" in source(page), f"{page}: no glossary link"


@pytest.mark.parametrize("page", chapter_files())
def test_chapters_end_with_self_check_exercises(page):
    text = source(page)
    labels = re.findall(r"```\{exercise\}\n:label: (\S+)", text)
    solved = re.findall(r"```\{solution\} (\S+)\n:class: dropdown", text)
    assert len(labels) >= 2, f"{page}: fewer than two self-check exercises"
    assert sorted(labels) == sorted(solved), f"{page}: every exercise needs a folded solution"


# ---- the built site ------------------------------------------------------------------


def test_every_toc_page_is_rendered(built):
    for name in toc_files():
        page = built / f"{name}.html"
        assert page.is_file(), f"{page} was not built"
    assert (built / "index.html").is_file()


def test_chapters_show_their_outputs(built):
    for name in chapter_files():
        html = (built / f"{name}.html").read_text()
        assert "cell_output" in html, f"{name}: no executed output"
        assert re.search(r"<img [^>]*src=", html), f"{name}: no figure"
        assert "Traceback (most recent call last)" not in html, f"{name}: a cell failed"
        assert re.search(r'<span class="caption-number">Figure \d+\.\d+', html), \
            f"{name}: figures are not numbered by chapter"


def test_landing_page_has_the_course_map(built):
    html = (built / f"{toc_files()[0]}.html").read_text().lower()
    for chapter in ("semantic segmentation", "u-net", "r-cnn", "detr", "mask r-cnn",
                    "panoptic", "full pipeline", "grad-cam", "beyond 2d"):
        assert chapter in html, f"course map lacks {chapter!r}"
    assert "coming" not in html, "the course map still marks a chapter as *coming*"


def test_pages_need_no_widget_javascript(built):
    # Saved widget state (e.g. a tqdm bar in a notebook) makes every page load the
    # widget manager from a CDN, and an offline reader then sees an empty box.
    for name in toc_files():
        html = (built / f"{name}.html").read_text()
        assert "application/vnd.jupyter.widget-view" not in html, f"{name}: saved widget output"
        assert "@jupyter-widgets/html-manager" not in html, f"{name}: loads the widget manager"


def test_pages_load_scripts_and_styles_from_the_site_only(built):
    for name in toc_files():
        html = (built / f"{name}.html").read_text()
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', html)
        assert not remote, f"{name}: loads {remote} from the network"
        if 'class="math' in html:  # Sphinx loads MathJax only on pages with formulas
            assert "_static/mathjax/tex-chtml.js" in html, f"{name}: MathJax is not the site's copy"
        assert html.count("const THEBE_JS_URL") <= 1, f"{name}: thebe configured twice"
    assert (built / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_numbers_in_prose_come_from_the_run(built):
    fcn = (built / "book" / "fcn_unet.html").read_text()
    assert "about a minute and a half" not in fcn
    total = re.search(r"The\s+four trainings took\s+(?:<[^>]+>)*\s*(\d+)", fcn)
    printed = [float(s) for s in re.findall(r"\| (\d+) s\b", fcn)]
    assert total and len(printed) == 4, "the training-time sentence or the printed times are missing"
    assert abs(int(total.group(1)) - sum(printed)) <= 2, "prose and printed training times disagree"
    und = (built / "book" / "understanding.html").read_text()
    assert "0.307" not in und and "8.81" not in und, "Figure 9's caption quotes stale maxima"


def test_assignment_zips_and_notebook_downloads_are_in_the_site(built):
    for folder in sorted(p for p in (REPO / "assignments").iterdir() if p.is_dir()):
        found = list((built / "_downloads").rglob(f"{folder.name}.zip"))
        assert found, f"no zip of assignments/{folder.name} in the site"
        names = zipfile.ZipFile(found[0]).namelist()
        for nb in folder.glob("*.ipynb"):
            assert f"{folder.name}/{nb.name}" in names, f"{found[0].name} lacks {nb.name}"
    for name in chapter_files():
        assert (built / "_sources" / f"{name}.ipynb").is_file(), f"{name}: no .ipynb download"
