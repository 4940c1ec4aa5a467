"""The configuration loader: shipped configs load, and every user mistake names file and key."""

import pytest

from hsaudit.config import load_config
from hsaudit.errors import AuditError


@pytest.mark.parametrize("name", ["demo", "ci"])
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.signal_region in cfg.regions
    assert len(cfg.control_regions) >= 2
    assert "tau_es" in cfg.shift_names
    assert cfg.weight_variation_names == ["tau_id_up", "tau_id_down", "muon_id_up", "muon_id_down"]
    assert any(d.is_signal for d in cfg.datasets.values())
    assert 15 <= len(cfg.feature_names) <= 25


def test_user_file_by_path(write_config):
    path = write_config("ci")
    cfg = load_config(str(path))
    assert cfg.path == path.resolve()


def test_section_hash_tracks_only_its_section(write_config):
    a = load_config(str(write_config("ci", name="a.yaml")))
    b = load_config(str(write_config("ci", lambda r: r["attacks"]["pgd"].update(steps=11), name="b.yaml")))
    assert a.section_hash("attacks") != b.section_hash("attacks")
    assert a.section_hash("selection", "features") == b.section_hash("selection", "features")


def _set(path, value):
    def edit(raw):
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, expected", [
    (_set(["systematics", "tau_es", "uncertainty"], -0.03), "systematics.tau_es.uncertainty: negative uncertainty"),
    (_set(["systematics", "tau_es", "type"], "banana"), "systematics.tau_es.type: unknown value 'banana' (known: 'shift', 'weight' or 'normalization')"),
    (_set(["models", "penalty_tes", "penalty"], {"tes": 20.0}), "models.penalty_tes.penalty: unknown systematic 'tes'"),
    (_set(["audit", "systematics"], ["nope"]), "audit.systematics: unknown systematic 'nope'"),
    (_set(["signal_region"], "sr"), "signal_region: unknown region 'sr'"),
    (_set(["datasets", "ztt", "cross_section"], None), "datasets.ztt.cross_section"),
    (lambda raw: raw["datasets"]["ztt"].pop("generate"), "datasets.ztt: give either 'files'"),
    (_set(["datasets", "ztt", "generate"], None), "datasets.ztt: give either 'files'"),
    (_set(["luminosity"], -1), "luminosity: must be > 0.0, got -1"),
    (_set(["features"], ["mu_pt", "mu_pt"]), "features: duplicate features ['mu_pt']"),
    (_set(["fit", "channels"], ["signal", "nowhere"]), "fit.channels: unknown region 'nowhere'"),
    (_set(["colour"], "blue"), "colour: unknown setting; known: name, seed, luminosity"),
])
def test_bad_config_names_file_and_key(write_config, edit, expected):
    path = write_config("ci", edit)
    with pytest.raises(AuditError) as err:
        load_config(str(path))
    assert expected in str(err.value)
    assert "user.yaml" in str(err.value)


def test_missing_dataset_section(write_config):
    path = write_config("ci", lambda raw: raw.pop("datasets"))
    with pytest.raises(AuditError, match="datasets: missing"):
        load_config(str(path))


def test_unknown_config_name_lists_shipped_ones():
    with pytest.raises(AuditError, match=r"unknown config 'nonexistent'.*'ci'"):
        load_config("nonexistent")


def test_broken_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(AuditError, match="not valid YAML"):
        load_config(str(path))
