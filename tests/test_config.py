"""Settings: safe defaults, derived limits, clear errors for bad values, README's table generated from the
declarations, and the tests' fault injection kept out of them. Pure: no service is touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cvunet_matting import config_fields
from cvunet_matting.config import Settings, load_settings, settings_table
from cvunet_matting.config_fields import declarations, table_in, with_table
from cvunet_matting.worker import faults

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_are_safe_and_local():
    settings = load_settings({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/cvunet_matting"
    assert settings.device == "auto" and settings.max_pixels == 50_000_000
    assert settings.api_tokens == () and settings.queue == "matting"
    assert settings.allowed_roots == ((settings.data_dir / "incoming").resolve(),)
    assert settings.single_user is False and settings.log_level == "INFO"


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("model", "isnet-fp16"),
        ("tensorrt", False),
        ("gpu_mem_limit_mb", 8192),
        ("intra_threads", 0),
        ("inter_threads", 1),
        ("max_upload_mb", 64),
        ("task_hard_limit", 600),
        ("task_soft_limit", 540),
        ("visibility_timeout", 3600),
        ("heartbeat_ttl", 5.0),
        ("heartbeat_interval", 1.0),
        ("reconcile_interval", 5.0),
        ("storage_retry_s", 300),
        ("retention_days", 30),
        ("batch_chunk", 200),
        ("bookkeeping_queue", "bookkeeping"),
        ("bookkeeping_concurrency", 2),
        ("max_attempts", 3),
        ("max_tasks_per_child", 1000),
        ("allowed_hosts", ()),
        ("session_hours", 12.0),
        ("trusted_proxies", ("127.0.0.1", "::1")),
        ("overlap", None),
        ("in_flight", 0),
        ("max_batch", 4),
        ("batch_wait_ms", 2.0),
        ("secret_key", ""),
        ("wait_slots", 24),
        ("alpha_derivations", 2),
        ("metrics_port", 0),
        ("metrics_addr", "127.0.0.1"),
        ("worker_role", "model"),
    ],
)
def test_each_default(name, default):
    value = getattr(load_settings({}), name)
    assert value == default and type(value) is type(default)


def test_directories_follow_xdg_and_the_home():
    settings = load_settings({"XDG_DATA_HOME": "/xdg/data", "XDG_CACHE_HOME": "/xdg/cache"})
    assert settings.data_dir == Path("/xdg/data/cvunet-matting")
    assert settings.model_dir == Path("/xdg/cache/cvunet-matting/models")
    assert load_settings({}).data_dir == Path.home() / ".local/share/cvunet-matting"
    assert load_settings({"CVUNET_DATA_DIR": "/srv/d"}).spool_dir == Path("/srv/d/spool")


@pytest.mark.parametrize(("hard", "soft"), [(10, 8), (60, 48), (600, 540), (3600, 3540)])
def test_soft_limit_stays_below_the_hard_limit(hard, soft):
    settings = load_settings({"CVUNET_TASK_HARD_LIMIT": str(hard)})
    assert settings.task_soft_limit == soft
    assert settings.visibility_timeout >= 2 * hard  # Redis must not redeliver a task still running


def test_an_explicit_soft_limit_and_the_visibility_floor():
    settings = load_settings(
        {"CVUNET_TASK_HARD_LIMIT": "3600", "CVUNET_TASK_SOFT_LIMIT": "100", "CVUNET_VISIBILITY_TIMEOUT": "60"}
    )
    assert settings.task_soft_limit == 100
    assert settings.visibility_timeout == 7200  # raised to twice the hard limit
    assert load_settings({"CVUNET_VISIBILITY_TIMEOUT": "9000"}).visibility_timeout == 9000


def test_the_heartbeat_beats_five_times_per_lifetime():
    assert load_settings({"CVUNET_HEARTBEAT_TTL": "2.5"}).heartbeat_interval == 0.5


def test_encode_threads_follow_the_model_threads_else_every_core():
    cores = len(os.sched_getaffinity(0))
    assert load_settings({}).encode_threads == cores
    assert load_settings({"CVUNET_ENCODE_THREADS": "0"}).encode_threads == cores  # 0: as if unset
    assert load_settings({"CVUNET_INTRA_THREADS": "3"}).encode_threads == 3
    assert load_settings({"CVUNET_INTRA_THREADS": "3", "CVUNET_ENCODE_THREADS": "5"}).encode_threads == 5
    assert load_settings({"CVUNET_ENCODE_THREADS": "-2"}).encode_threads == 1


def test_counts_are_raised_to_their_minimum():
    settings = load_settings(
        {
            "CVUNET_MAX_BATCH": "0",
            "CVUNET_BATCH_WAIT_MS": "-3",
            "CVUNET_WAIT_SLOTS": "-1",
            "CVUNET_ALPHA_DERIVATIONS": "0",
            "CVUNET_MAX_TASKS_PER_CHILD": "-5",
            "CVUNET_BOOKKEEPING_CONCURRENCY": "0",
        }
    )
    assert (settings.max_batch, settings.wait_slots, settings.alpha_derivations) == (1, 1, 1)
    assert (settings.batch_wait_ms, settings.max_tasks_per_child, settings.bookkeeping_concurrency) == (0.0, 0, 1)


@pytest.mark.parametrize(("text", "value"), [("1", True), ("yes", True), ("ON", True), ("0", False), ("no", False)])
def test_flags(text, value):
    settings = load_settings({"CVUNET_TENSORRT": text, "CVUNET_OVERLAP": text, "CVUNET_INTRA_SPIN": text})
    assert settings.tensorrt is value and settings.overlap is value and settings.intra_spin is value


def test_lists_and_paths(tmp_path):
    settings = load_settings(
        {"CVUNET_API_TOKENS": " a, b ,,", "CVUNET_ALLOWED_ROOTS": f"{tmp_path}:/srv/in", "CVUNET_DATA_DIR": "~/x"}
    )
    assert settings.api_tokens == ("a", "b")
    assert settings.allowed_roots == (tmp_path.resolve(), Path("/srv/in").resolve())
    assert settings.data_dir == Path.home() / "x"
    assert load_settings({"CVUNET_ALLOWED_HOSTS": "Photos.Example, LAN"}).allowed_hosts == ("photos.example", "lan")


def test_a_blank_value_is_the_default():
    settings = load_settings({"CVUNET_MAX_PIXELS": " ", "CVUNET_MODEL": "", "CVUNET_OVERLAP": ""})
    assert (settings.max_pixels, settings.model, settings.overlap) == (50_000_000, "isnet-fp16", None)


def test_secrets_are_not_in_the_repr():
    settings = load_settings(
        {
            "CVUNET_API_TOKENS": "sekrit-token",
            "CVUNET_SECRET_KEY": "sekrit-key",
            "CVUNET_REDIS_URL": "redis://:sekrit-pw@redis:6379/0",
            "CVUNET_DATABASE_URL": "postgresql://u:sekrit-pg@db/x?sslmode=require",
        }
    )
    assert "sekrit" not in repr(settings)
    assert settings.secret_key == "sekrit-key" and settings.api_tokens == ("sekrit-token",)


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("CVUNET_MAX_PIXELS", "CVUNET_MAX_PIXELS must be an integer, got 'lots'"),
        ("CVUNET_TASK_HARD_LIMIT", "CVUNET_TASK_HARD_LIMIT must be an integer, got 'lots'"),
        ("CVUNET_HEARTBEAT_TTL", "CVUNET_HEARTBEAT_TTL must be a number, got 'lots'"),
        ("CVUNET_BATCH_WAIT_MS", "CVUNET_BATCH_WAIT_MS must be a number, got 'lots'"),
    ],
)
def test_a_bad_number_names_the_variable_and_the_value(variable, message):
    with pytest.raises(ValueError) as refused:
        load_settings({variable: "lots"})
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("variable", "allowed"),
    [
        ("CVUNET_AUTH", "users, single-user"),
        ("CVUNET_DEVICE", "auto, cpu, cuda"),
        ("CVUNET_LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("CVUNET_WORKER_ROLE", "model, bookkeeping"),
    ],
)
def test_a_bad_choice_is_refused_with_the_allowed_ones(variable, allowed):
    with pytest.raises(ValueError) as refused:
        load_settings({variable: "nonsense"})
    assert str(refused.value).startswith(f"{variable} must be one of {allowed}, got ")


def test_choices_are_read_in_their_case():
    settings = load_settings(
        {
            "CVUNET_AUTH": "single-user",
            "CVUNET_DEVICE": "CUDA",
            "CVUNET_LOG_LEVEL": "debug",
            "CVUNET_WORKER_ROLE": "bookkeeping",
        }
    )
    assert settings.single_user is True and settings.device == "cuda"
    assert (settings.log_level, settings.worker_role) == ("DEBUG", "bookkeeping")


def test_each_variable_is_declared_once_with_a_help():
    declared = declarations(Settings)
    variables = [one.env for one in declared if one.env]
    assert len(variables) == len(set(variables))
    assert all(one.help.strip() for one in declared)
    assert {one.name for one in declared if not one.env} == {"heartbeat_interval", "single_user"}


def test_the_readme_table_is_the_generated_one():
    """When this fails, `make settings-table` rewrites README's table from config.py."""
    assert table_in(README.read_text()) == settings_table()


def test_the_table_has_a_row_per_variable_and_none_for_the_tests():
    rows = settings_table()[2:]
    assert [row.split("`")[1] for row in rows] == [one.env for one in declarations(Settings) if one.env]
    assert not any("CVUNET_TEST_" in row for row in rows)
    assert "| `CVUNET_VISIBILITY_TIMEOUT` | `3600`, at least twice the hard limit |" in "\n".join(rows)


def test_the_table_is_replaced_between_its_markers_only():
    readme = f"intro\n{config_fields.TABLE_START}\n| old |\n{config_fields.TABLE_END}\noutro\n"
    rewritten = with_table(readme, ["| new |", "| rows |"])
    assert rewritten == f"intro\n{config_fields.TABLE_START}\n| new |\n| rows |\n{config_fields.TABLE_END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        table_in("a README without the markers")


def test_fault_injection_is_not_a_setting():
    settings = load_settings({"CVUNET_TEST_CRASH_ON": "abc", "CVUNET_TEST_DELAY_S": "3"})
    assert not hasattr(settings, "crash_on_inputs") and not hasattr(settings, "test_delay_s")


def test_fault_injection_reads_its_own_variables(monkeypatch):
    monkeypatch.setenv("CVUNET_TEST_CRASH_ON", " k1, k2 ,")
    monkeypatch.setenv("CVUNET_TEST_DELAY_S", "1.5")
    faults.faults.cache_clear()
    try:
        assert faults.faults() == faults.Faults(frozenset({"k1", "k2"}), 1.5)
        monkeypatch.delenv("CVUNET_TEST_CRASH_ON")
        monkeypatch.delenv("CVUNET_TEST_DELAY_S")
        faults.faults.cache_clear()
        assert faults.faults() == faults.Faults(frozenset(), 0.0)
    finally:
        faults.faults.cache_clear()
