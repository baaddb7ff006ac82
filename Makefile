# desweep: two commands for a fresh machine
#   make example   install everything into .venv and run the whole pipeline on the bundled example
#   make test      install what is missing and run the test suite (what CI runs)
#   make check     the fast loop: every test not marked slow (unit, rule, schema and launch-time tests)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.desweep-installed
EXAMPLE_OUT ?= results/example
PYTEST_ARGS ?=

.PHONY: install example test check nextflow-engine images lock guide clean

# the versions pinned for the images (containers/requirements.lock), so that the tests run
# what the images run
$(STAMP): pyproject.toml containers/requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' --constraint containers/requirements.lock
	touch $(STAMP)

install: $(STAMP)

## The Nextflow engine, assembled from Maven Central into ~/.cache/desweep (see docs/nextflow_engine.md)
nextflow-engine:
	scripts/nextflow -version

example: install
	$(VENV)/bin/desweep simulate -o $(EXAMPLE_OUT)/input/simulated.h5ad --n-cells 3000 --n-genes 2000 --seed 0
	$(VENV)/bin/desweep run -c examples/simulated.yaml -i $(EXAMPLE_OUT)/input/simulated.h5ad -o $(EXAMPLE_OUT)
	@echo "report: $(EXAMPLE_OUT)/multiqc/multiqc_report.html"

test: install nextflow-engine
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

## Everything but the tests marked slow (scVI training, whole pipeline runs, SLURM, image builds):
## a few minutes (docs/testing.md, "Two loops")
check: install nextflow-engine
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## desweep's images, tagged as nextflow.config expects them, with podman or docker (docs/usage.md,
## "Containers"); on a VM without a registry: eval "$$(scripts/podman_setup)" first
images:
	scripts/build_images

## Pin the images' dependencies at the versions installed in .venv (containers/requirements*.lock)
lock: install
	$(PY) scripts/lock_requirements.py

## The real-data guide (docs/guide.md): needs ../shared/data/pbmc_3tech.h5ad and Debian's chromium
guide: install
	$(PY) scripts/guide_data.py ../shared/data/pbmc_3tech.h5ad results/guide/pbmc_two_specific.h5ad
	$(VENV)/bin/desweep run -c examples/pbmc_guide.yaml
	scripts/guide_figures.sh results/guide docs/guide B-cells_vs_Monocytes

clean:
	rm -rf results .pytest_cache .nextflow* work
