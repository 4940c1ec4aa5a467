"""Shared test fixtures: paths to the shared real data, a per-test DATA_PATH, small helpers."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("AUDIT_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (set AUDIT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def write_config(tmp_path):
    """Write a config YAML derived from a shipped one, with edits applied to the raw mapping."""
    import yaml

    def _write(base: str = "ci", edit=None, name: str = "user.yaml") -> Path:
        raw = yaml.safe_load((REPO / "config" / f"{base}.yaml").read_text())
        if edit is not None:
            edit(raw)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return _write


@pytest.fixture(scope="session")
def law_data(tmp_path_factory):
    """One DATA_PATH for the law integration tests of a session: later stages reuse what
    earlier tests produced, as a user's reruns would."""
    return tmp_path_factory.mktemp("law_data")
