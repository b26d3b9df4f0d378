"""Worker planning: one worker per GPU, or CPU workers that share the cores."""

from __future__ import annotations

from cvunet_matting.worker.supervisor import command, plan


def test_one_worker_per_gpu_pinned_to_it():
    specs = plan(["0", "3"], 0, metrics_port=9100)
    assert [s.name for s in specs] == ["gpu0@%h", "gpu3@%h"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "3"]
    assert {s.env["CVUNET_DEVICE"] for s in specs} == {"cuda"}
    assert [s.env["CVUNET_METRICS_PORT"] for s in specs] == ["9100", "9101"]


def test_cpu_workers_split_the_cores_between_them():
    specs = plan([], 2, cores=8)
    assert [s.env["CVUNET_INTRA_THREADS"] for s in specs] == ["4", "4"]
    assert {s.env["CUDA_VISIBLE_DEVICES"] for s in specs} == {""}
    assert plan([], 3, cores=2)[0].env["CVUNET_INTRA_THREADS"] == "1"  # never zero (= all cores)


def test_configured_thread_count_wins():
    assert plan([], 2, intra_threads=6, cores=8)[0].env["CVUNET_INTRA_THREADS"] == "6"


def test_each_worker_runs_one_task_at_a_time_under_its_own_name():
    argv = command(plan([], 1, cores=4)[0], "matting", "INFO")
    assert argv[argv.index("--concurrency") + 1] == "1" and argv[argv.index("-n") + 1] == "cpu0@%h"
    assert argv[argv.index("-Q") + 1] == "matting" and "-E" in argv


def test_a_gpu_worker_holds_several_images_a_cpu_worker_one():
    gpu = command(plan(["0"], 0)[0], "matting", "INFO")
    cpu = command(plan([], 1, cores=4)[0], "matting", "INFO")
    assert int(gpu[gpu.index("--concurrency") + 1]) > 1 and cpu[cpu.index("--concurrency") + 1] == "1"
    assert gpu[gpu.index("--pool") + 1] == cpu[cpu.index("--pool") + 1] == "prefork"


def test_overlap_settings():
    from cvunet_matting.worker.overlap import load_overlap

    assert not load_overlap({"CVUNET_DEVICE": "cpu"}).enabled
    gpu = load_overlap({"CVUNET_DEVICE": "cuda", "CVUNET_MAX_BATCH": "8"}, cores=16)
    assert gpu.enabled and gpu.max_batch == 8 and gpu.in_flight == 17 and gpu.concurrency == 17
    assert load_overlap({"CVUNET_DEVICE": "cuda"}, cores=2).in_flight == 4 + 2 + 1
    forced = load_overlap({"CVUNET_OVERLAP": "1", "CVUNET_IN_FLIGHT": "3", "CVUNET_BATCH_WAIT_MS": "5"})
    assert forced.concurrency == 3 and forced.batch_wait_s == 0.005


def test_a_model_worker_serving_metrics_gets_its_own_empty_multiprocess_folder():
    from pathlib import Path

    from cvunet_matting.worker.supervisor import bookkeeper, metrics_folder

    gpu0, gpu1 = plan(["0", "1"], 0, metrics_port=9100)
    first, second = Path(metrics_folder(gpu0)["PROMETHEUS_MULTIPROC_DIR"]), metrics_folder(gpu1)
    assert first.is_dir() and first != Path(second["PROMETHEUS_MULTIPROC_DIR"])
    (first / "counter_123.db").write_bytes(b"stale")
    assert list(Path(metrics_folder(gpu0)["PROMETHEUS_MULTIPROC_DIR"]).iterdir()) == []  # a restart starts empty
    assert metrics_folder(bookkeeper()) == {} and metrics_folder(plan([], 1)[0]) == {}  # no port: nothing served
