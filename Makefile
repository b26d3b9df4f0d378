# cvunet-matting: everyday commands. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

# machine: system packages the tests drive (apt-get, only what is missing), Redis and Postgres up.
.PHONY: machine install install-gpu model run stop test test-fast lint bench bench-pipeline bench-http reliability clean

install:
	$(PIP) install -q -e '.[test]'

# onnxruntime-gpu and onnxruntime ship the same module: replace the CPU wheel rather than add to it.
install-gpu: install
	$(PIP) install -q -e '.[gpu]'
	$(PIP) uninstall -y onnxruntime
	$(PIP) install -q --force-reinstall --no-deps 'onnxruntime-gpu>=1.17'

model:
	cvunet-matting model fetch

run: install model
	cvunet-matting run

stop:
	cvunet-matting stop

machine:
	bash .ci/prepare-machine

test: machine install model
	$(PYTHON) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-fast:
	$(PYTHON) -m pytest -p no:cacheprovider -m "not stack and not browser" $(PYTEST_ARGS)

lint:
	ruff check .
	ruff format --check .

bench: model
	$(PYTHON) benchmarks/bench_model.py

bench-pipeline: model
	$(PYTHON) benchmarks/bench_pipeline.py

bench-http: model
	$(PYTHON) benchmarks/bench_http.py

reliability: model
	$(PYTHON) benchmarks/reliability.py

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache outputs test-artifacts
