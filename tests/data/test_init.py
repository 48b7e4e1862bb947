"""Importing vitdense.data: no network access."""

import pytest


@pytest.mark.slow  # a fresh interpreter importing torch and albumentations: 9 s
def test_importing_vitdense_data_does_not_ask_pypi_for_albumentations_updates() -> None:
    """albumentations checks PyPI for a newer version on import unless told not to: offline, a warning on every run."""
    import os
    import subprocess
    import sys

    code = (
        "import urllib.request as u\n"
        "calls = []\n"
        "u.OpenerDirector.open = lambda self, *a, **k: calls.append(a) or (_ for _ in ()).throw(OSError('offline'))\n"
        "import vitdense.data, albumentations\n"
        "print('requests', len(calls))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "requests 0" in out.stdout, out.stdout + out.stderr
