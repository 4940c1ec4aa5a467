"""Input paths of a configuration: ${VAR:-default} takes the variable when set, else the
default (the HiggsML config reads its files from HIGGSML_DATA or the shared folder)."""

import pytest

from hsaudit.config import load_config, resolve_dataset_files
from hsaudit.errors import AuditError


def test_variable_with_default(write_config, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "data" / name).write_text("x\n")

    def edit(raw):
        raw["datasets"]["ztt"]["files"] = ["${MY_INPUTS:-data}/a.csv"]
        raw["datasets"]["ztt"].pop("generate", None)

    cfg = load_config(write_config("ci", edit))
    monkeypatch.delenv("MY_INPUTS", raising=False)
    assert resolve_dataset_files(cfg.datasets["ztt"], cfg) == [(tmp_path / "data" / "a.csv").resolve()]
    monkeypatch.setenv("MY_INPUTS", str(tmp_path / "elsewhere"))
    with pytest.raises(AuditError, match="elsewhere/a.csv does not exist"):
        resolve_dataset_files(cfg.datasets["ztt"], cfg)


def test_higgsml_files_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HIGGSML_DATA", str(tmp_path))
    cfg = load_config("higgsml")
    with pytest.raises(AuditError, match="higgsml_sig_4999.csv does not exist"):
        resolve_dataset_files(cfg.datasets["htt"], cfg)
