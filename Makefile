# cvunet-matting: everyday commands. `make run` and `make test` are the README's two commands.
# Everything runs inside the project's own virtual environment (.venv/), never the system Python.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Test processes (pytest-xdist; 0 runs them in this one). The suite mostly waits on real workers,
# heartbeats and browsers (a serial run keeps 2 cores about a quarter busy), so 4 on 2 cores halves it.
TEST_WORKERS ?= 4
# The interpreter that creates the environment (Python 3.11 or newer).
BOOTSTRAP_PYTHON ?= python3
# Tools the package installs (traefik, hadolint, ruff, cvunet-matting) come from the environment first.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: machine machine-run install install-gpu model run stop test test-unit lint settings-table bench bench-pipeline bench-http reliability clean compose-test bench-batch bench-worker bench-quality bench-latency bench-web-stop bench-alpha bench-delete bench-cancel bench-rerender bench-canvas bench-peer k8s-check bench-batch-render bench-edges bench-device-edges

# The environment, reinstalled when the package's metadata changes.
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# onnxruntime-gpu and onnxruntime ship the same module: replace the CPU wheel rather than add to it.
install-gpu: install
	$(PYTHON) -m pip install -q -e '.[gpu]'
	$(PYTHON) -m pip uninstall -y onnxruntime
	$(PYTHON) -m pip install -q --force-reinstall --no-deps 'onnxruntime-gpu>=1.17'

model: install
	$(BIN)/cvunet-matting model fetch

# machine-run first: on a fresh machine the venv needs Python's venv module, the stack Redis and PostgreSQL.
run: machine-run install model
	$(BIN)/cvunet-matting run

stop: install
	$(BIN)/cvunet-matting stop

# machine: system packages the tests drive (apt-get, only what is missing), Redis and Postgres up;
# machine-run: only what `make run` needs (Python's venv, Redis, PostgreSQL). Not root on Debian and
# something missing: one line each saying what to install, and make stops.
machine:
	VENV=$(VENV) BOOTSTRAP_PYTHON=$(BOOTSTRAP_PYTHON) bash .ci/prepare-machine test

machine-run:
	VENV=$(VENV) BOOTSTRAP_PYTHON=$(BOOTSTRAP_PYTHON) bash .ci/prepare-machine run

test: machine install model
	$(PYTHON) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The unit tier: every test that needs no Redis, PostgreSQL, Celery worker, Traefik, browser or real
# ISNet (tests/conftest.py marks them `unit`). It passes with no server running, and claims none;
# .ci/run proves it with no network at all. The tools a unit test drives (docker-compose, promtool)
# come from `make machine`. Its tests are CPU work, so one process per core.
UNIT_WORKERS ?= 2
test-unit: install
	$(PYTHON) -m pytest -p no:cacheprovider -m unit -n $(UNIT_WORKERS) $(PYTEST_ARGS)

# ruff, the import contracts (pyproject.toml, [tool.importlinter]: the layers run one way) and the
# type checker (pyproject.toml, [tool.mypy]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# deploy/kubernetes: both overlays rendered (kubectl kustomize), every object validated against the
# Kubernetes and vendored CRD schemas with unknown fields refused, and the project's rules
# (deploy/kubernetes/k8s_check.py). No cluster needed.
k8s-check: install
	$(PYTHON) deploy/kubernetes/k8s_check.py

bench: model
	$(PYTHON) benchmarks/bench_model.py

bench-pipeline: model
	$(PYTHON) benchmarks/bench_pipeline.py

bench-http: model
	$(PYTHON) benchmarks/bench_http.py

reliability: model
	$(PYTHON) benchmarks/reliability.py

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache test-artifacts $(VENV)

# The compose stack for real (root, Debian): dockerd started and stopped, local base images, the
# project's images, the stack with three CPU workers, end-to-end and failover tests through Traefik
# over HTTPS (tests/test_compose.py), everything torn down even when a test fails. docker/README.md.
compose-test: machine install
	PYTHON=$(abspath $(PYTHON)) bash docker/ci/compose-test.sh $(PYTEST_ARGS)

bench-worker: model
	$(PYTHON) benchmarks/bench_worker.py

bench-batch: install
	$(PYTHON) benchmarks/bench_batch.py

bench-quality: model
	$(PYTHON) benchmarks/bench_quality.py

# Single-image latency through Traefik (?wait= and polling clients, concurrency 1 and 4) against the
# worker's own per-task time, with the real model and a simulated 20 ms device; prints, never asserts.
# BENCH_LATENCY_ARGS, e.g. --rembg /tmp/rembg-venv/bin/python for rembg's server side by side.
bench-latency: model
	$(PYTHON) benchmarks/bench_latency.py $(BENCH_LATENCY_ARGS)

# A web instance stopped (SIGTERM) while a client's ?wait= request is held on it: when the client is
# answered and when the instance exits (its graceful timeout is 20 s); prints, never asserts.
bench-web-stop: model
	$(PYTHON) benchmarks/bench_web_stop.py

# The alpha matte download of large cut-outs: every GET before, first and later GETs now; prints.
bench-alpha: install
	$(PYTHON) benchmarks/bench_alpha.py

# A re-render (POST /api/v1/tasks/<id>/render) at 12 MP and 1 MP from the real ISNet's raw matte, and
# what keeping that matte costs the worker; prints p50 figures, never asserts.
bench-rerender: model
	$(PYTHON) benchmarks/bench_rerender.py

# The edge steps as the model's ONNX suffix against the CPU path, with the real ISNet on the configured
# device (CVUNET_DEVICE; the GPU script is benchmarks/gpu_edge_suffix.sh); prints, never asserts.
bench-edges: model
	$(PYTHON) benchmarks/bench_edge_suffix.py $(BENCH_EDGES_ARGS)

# The overlapped worker's image work (a real device process, a pool of processes running matte_bytes)
# with the edge steps on the host's cores or in the device process's suffix, alternating; img/s and host
# CPU ms an image. The point on a GPU (benchmarks/gpu_run.sh on a lent one); prints, never asserts.
bench-device-edges: model
	$(PYTHON) benchmarks/bench_device_edges.py $(BENCH_DEVICE_EDGES_ARGS)

# Issue #29 item 4: the whole `make run` stack against rembg's server (`rembg s`, installed once into
# var/bench-peer/rembg-venv, given our model file) and bare onnxruntime on the same ISNet fp16 file and
# the same 800x800 JPEGs, concurrency 1 and 4, rounds A B C / C B A; prints ratios, never asserts.
# BENCH_PEER_ARGS, e.g. --variant arena:CVUNET_CPU_ARENA=1 for worker settings side by side.
bench-peer: model
	$(PYTHON) benchmarks/bench_peer.py $(BENCH_PEER_ARGS)

bench-batch-render: model
	$(PYTHON) benchmarks/bench_batch_render.py

# The task page's "Adjust edges" preview in Chromium: a slider move's cost, and the preview against the server's.
.PHONY: bench-preview
bench-preview: model
	$(PYTHON) benchmarks/bench_preview.py

bench-canvas: model
	$(PYTHON) benchmarks/bench_canvas.py

bench-delete: install
	$(PYTHON) benchmarks/bench_delete.py

bench-cancel: install
	$(PYTHON) benchmarks/bench_cancel.py

# README's settings table, regenerated from the declarations in cvunet_matting/config.py
# (tests/test_config.py fails while the two differ).
settings-table: install
	$(PYTHON) -c 'from cvunet_matting.config import write_settings_table; write_settings_table("README.md")'
