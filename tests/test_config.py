"""Settings: safe defaults, derived limits, clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvunet_matting.config import load_settings


def test_defaults_are_safe_and_local():
    settings = load_settings({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.device == "auto" and settings.max_pixels == 50_000_000
    assert settings.api_tokens == () and settings.queue == "matting"
    assert settings.allowed_roots == ((settings.data_dir / "incoming").resolve(),)


@pytest.mark.parametrize(("hard", "soft"), [(10, 8), (60, 48), (600, 540), (3600, 3540)])
def test_soft_limit_stays_below_the_hard_limit(hard, soft):
    settings = load_settings({"CVUNET_TASK_HARD_LIMIT": str(hard)})
    assert settings.task_soft_limit == soft
    assert settings.visibility_timeout >= 2 * hard  # Redis must not redeliver a task still running


def test_lists_and_paths(tmp_path):
    settings = load_settings(
        {"CVUNET_API_TOKENS": " a, b ,,", "CVUNET_ALLOWED_ROOTS": f"{tmp_path}:/srv/in", "CVUNET_DATA_DIR": "~/x"}
    )
    assert settings.api_tokens == ("a", "b")
    assert settings.allowed_roots == (tmp_path.resolve(), Path("/srv/in").resolve())
    assert settings.data_dir == Path.home() / "x"


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


def test_a_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="CVUNET_MAX_PIXELS"):
        load_settings({"CVUNET_MAX_PIXELS": "lots"})
