"""Sphinx extension for the course site: things to take away, and a clean page.

- **Assignment zips.** Before the sources are read, every folder under
  ``assignments/`` is zipped into ``book/_generated/assignments/<name>.zip``
  (file times fixed, so an unchanged assignment gives an identical zip), where
  the assignments page links it with the ``{download}`` role.
- **Notebook downloads.** sphinx-book-theme offers a chapter's executed
  ``.ipynb`` only when a Binder/JupyterHub launch button is configured; this
  extension copies the executed notebook next to the page sources and offers it
  on every notebook page, launch buttons or not.
- **One thebe configuration per page.** sphinx-thebe adds its inline
  ``const THEBE_JS_URL = ...`` script each time Sphinx emits
  ``env-before-read-docs``, once with ``filename=None`` in the builder and once
  with ``filename=""`` from the registry, so every page declared the constant
  twice and threw "Identifier 'THEBE_JS_URL' has already been declared" (and
  sphinx-togglebutton's selector is doubled the same way). Inline scripts with
  the same body are kept once.
- **Each glued figure shown once.** ``cv_course.viz.glue_figure`` glues a figure
  *and* displays it, so that a reader running the notebook sees it in place. On
  the page it belongs in its numbered ``{glue:figure}`` only: a glued image
  output is dropped from its cell's outputs when myst-nb reads the notebook (it
  stays in the downloadable notebook).
- **A theme mode from the start.** The theme's head script sets the page's
  light/dark mode from ``localStorage`` or an empty default; on a reader's first
  visit it is empty and the theme logs "Got invalid theme mode" as a console
  error. An inline script makes the empty mode "auto" (follow the system).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

ZIP_TIME = (2026, 1, 1, 0, 0, 0)  # a fixed time stamp: the zip depends on the files only


def zip_folder(folder: Path, target: Path) -> Path:
    """Zip ``folder`` into ``target`` with paths ``<folder name>/...``; hidden files skipped."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder.parent)
            if path.is_dir() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            info = zipfile.ZipInfo(rel.as_posix(), date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    tmp.replace(target)
    return target


def build_assignment_zips(app) -> None:
    root = Path(app.srcdir)
    out = root / "book" / "_generated" / "assignments"
    for folder in sorted(p for p in (root / "assignments").iterdir() if p.is_dir()):
        zip_folder(folder, out / f"{folder.name}.zip")


def offer_notebook(app, pagename, templatename, context, doctree) -> None:
    """Point the theme's download menu at the executed notebook of a MyST notebook page."""
    if doctree is None or context.get("ipynb_source"):
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.is_file():
        return  # a plain Markdown page, not a notebook
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", script) or "", repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"][:] = kept  # in place: it is the builder's list, which others extend


def _drop_glued_figures_from_cells() -> None:
    """Wrap myst-nb's glue extraction so that glued images leave their cell's outputs."""
    from myst_nb.ext import glue

    extract = glue.extract_glue_data_cell  # myst-nb 1.x; fails loudly if it moves
    if getattr(extract, "_course_site", False):
        return

    def extract_and_drop(cell):
        data = extract(cell)
        glued = {id(output) for _, output in data
                 if any(k.startswith("image/") for k in output.get("data", {}))}
        cell.outputs = [o for o in cell.get("outputs", []) if id(o) not in glued]
        return data

    extract_and_drop._course_site = True
    glue.extract_glue_data_cell = extract_and_drop


AUTO_MODE_JS = ("if (!document.documentElement.dataset.mode) "
                "{ document.documentElement.dataset.mode = 'auto'; }")


def setup(app):
    _drop_glued_figures_from_cells()
    app.add_js_file(None, body=AUTO_MODE_JS, priority=1)  # before the theme's deferred script
    app.connect("builder-inited", build_assignment_zips)
    app.connect("html-page-context", offer_notebook, priority=450)  # before the theme's buttons (501)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
