"""Settings: defaults, validation in plain words, persistence, a broken file."""

from __future__ import annotations

import pytest

from assistant.config import Settings, data_dir, settings_path
from assistant.errors import SettingsError


def test_home_override_is_used(isolated_home) -> None:
    assert data_dir() == isolated_home and isolated_home.is_dir()


def test_settings_round_trip(isolated_home) -> None:
    s = Settings(n_ctx=1024, n_threads=3, n_gpu_layers=-1, temperature=0.2, top_p=0.5, max_tokens=77,
                 system_prompt='Say "hi" \\ then\nstop. Ünïcode ✓', theme="dark", model_path="/tmp/x y.gguf")
    s.save()
    assert Settings.load() == s


@pytest.mark.parametrize(
    "values, message",
    [
        ({"n_ctx": 10}, "Context size"),
        ({"n_ctx": "lots"}, "n_ctx"),
        ({"temperature": -1}, "Temperature"),
        ({"top_p": 0}, "Top-p"),
        ({"max_tokens": 0}, "Max tokens"),
        ({"n_gpu_layers": -5}, "GPU layers"),
        ({"n_threads": 2.5}, "n_threads"),
        ({"theme": "purple"}, "Theme"),
        ({"api_allowed_origins": "notes.example.org"}, "not a web origin"),
        ({"api_allowed_origins": "http://ok.example, https://x.example/page"}, "not a web origin"),
    ],
)
def test_invalid_values_are_refused_plainly(values, message) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_dict(values)


def test_loose_values_are_converted() -> None:
    s = Settings.from_dict({"n_ctx": "2048", "flash_attn": "true", "temperature": "0.5", "unknown_key": 1})
    assert s.n_ctx == 2048 and s.flash_attn is True and s.temperature == 0.5


def test_broken_settings_file_names_itself(isolated_home) -> None:
    settings_path().write_text("n_ctx = = 3\n")
    with pytest.raises(SettingsError, match="settings.toml"):
        Settings.load()


def test_save_is_atomic_and_leaves_no_temp_files(isolated_home) -> None:
    Settings().save()
    Settings(n_ctx=999).save()
    assert [p.name for p in isolated_home.iterdir()] == ["settings.toml"]
