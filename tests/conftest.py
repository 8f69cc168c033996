"""Shared test helpers: where the public data folder is, and skipping cleanly without it."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(name: str) -> Path:
    """Path to a public data file, or skip the test when the folder is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"public data {path} not present")
    return path


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Quality-gate verdicts and other caches go to a folder of this session, never the user's ~/.cache."""
    import os

    os.environ["JOULEPATH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
