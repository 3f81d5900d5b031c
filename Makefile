# Two entry points do all set-up from a fresh clone:
#   make book   -> builds the book into _build/html/index.html
#   make test   -> runs the whole test suite
# Both create the virtual environment .venv on first use (or reuse one).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup book book-clean test test-fast bench bench-quality release clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

book: setup
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo "Book: $(CURDIR)/_build/html/index.html"

book-clean:
	rm -rf _build

# Two pytest workers, one file each at a time (the book build and the nbgrader
# runs are long single files), one math thread per process: on a 2-core machine
# oversubscribed threads make PyTorch many times slower, not faster.
JOBS ?= 2
test: setup
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

clean:
	rm -rf _build .pytest_cache
