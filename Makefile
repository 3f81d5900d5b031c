# Two entry points do all set-up from a fresh clone:
#   make book   -> builds the book into _build/html/index.html
#   make test   -> runs the whole test suite
# Both create the virtual environment .venv on first use (or reuse one).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup book book-assets browser book-clean test test-fast bench bench-quality release autograde clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

# The book serves MathJax from its own _static folder (offline readers, no CDN):
# the npm package, checked by npm against the registry's hash, unpacked once.
MATHJAX_VERSION := 3.2.2
MATHJAX := book/_static/mathjax/tex-chtml.js
$(MATHJAX):
	@command -v npm >/dev/null || { echo "npm is needed once to fetch MathJax: apt-get install -y npm"; exit 1; }
	rm -rf book/_static/mathjax _build/mathjax-tmp && mkdir -p _build/mathjax-tmp book/_static/mathjax
	cd _build/mathjax-tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	tar -xzf _build/mathjax-tmp/mathjax-$(MATHJAX_VERSION).tgz -C _build/mathjax-tmp
	cd _build/mathjax-tmp/package && cp -r LICENSE es5/tex-chtml.js es5/input es5/output es5/ui \
		es5/a11y es5/sre es5/adaptors $(CURDIR)/book/_static/mathjax/
	rm -rf _build/mathjax-tmp
	@test -f $(MATHJAX)

# What the book needs besides Python packages: MathJax, and the trained models
# the chapters load (segmentation, detectors) in the package cache, trained here
# outside the notebooks' execution timeout by two worker processes, one math
# thread each, longest first; a model already cached costs a load.
book-assets: setup $(MATHJAX)
	$(PY) -m cv_course.experiments.assets --jobs 2

book: book-assets
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo "Book: $(CURDIR)/_build/html/index.html"

# Headless Chromium and its driver, for tests/test_browser.py (Debian packages;
# needs root, as CI has). Nothing to do where they are installed.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "browser: chromium/chromedriver missing and cannot be installed here (not root or no apt-get)"; fi

book-clean:
	rm -rf _build

# Two pytest workers, one file each at a time (the book build and the nbgrader
# runs are long single files), one math thread per process: on a 2-core machine
# oversubscribed threads make PyTorch many times slower, not faster.
JOBS ?= 2
test: setup browser book-assets
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadfile

# Unit tests only (no book build, no nbgrader pipeline).
test-fast: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadfile -m "not book and not grading"

bench: setup
	$(PY) benchmarks/ops.py

# Quality measurements that train models (minutes on a CPU): U-Net/FCN time to
# mIoU, and the pointing game and attacks on the shape classifiers.
bench-quality: setup
	$(PY) benchmarks/segmentation.py
	$(PY) benchmarks/interpret.py

# Regenerate assignments/ (the student release) from solutions/.
release: setup
	$(PY) -m cv_course.grading.release

# Autograde every submission of one assignment, in parallel (see the README's
# instructor section): make autograde A=02_boxes [ARGS="--workers 4 --memory 4GB"]
autograde: setup
	@test -n "$(A)" || { echo "usage: make autograde A=02_boxes [ARGS=...]"; exit 1; }
	$(PY) -m cv_course.grading.autograde $(A) $(ARGS)

clean:
	rm -rf _build .pytest_cache
