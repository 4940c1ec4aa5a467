"""Flat-table input: CSV / parquet / ROOT readers, layout, systematics sources, missing values, errors."""

from __future__ import annotations

import copy
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.flat_tables import declared_sigmas, read_flat_dataset, read_flat_datasets
from hsaudit.tables import FeatureTable

N = 240


def make_frame(seed: int, id_offset: int = 0, label: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pt = rng.uniform(15.0, 80.0, N)
    mt = rng.uniform(0.0, 120.0, N)
    jet = rng.uniform(30.0, 200.0, N)
    jet[rng.random(N) < 0.3] = -999.0  # events without the jet
    frame = pd.DataFrame({
        "evt": (np.arange(N) * 7 + 3 + id_offset).astype(np.int64),
        "w": rng.uniform(0.5, 1.5, N),
        "lab": np.full(N, label if label is not None else 1, dtype=np.int64),
        "pt_a": pt,
        "eta_a": rng.uniform(-2.3, 2.3, N),
        "jet_pt": jet,
        "mt": mt,
        "q": rng.choice([-1.0, 1.0], N),
    })
    frame["pt_a__ptsc_up"] = pt * 1.1
    frame["pt_a__ptsc_down"] = pt * 0.9
    frame["mt__ptsc_up"] = mt + 5.0
    frame["mt__ptsc_down"] = mt - 5.0
    frame["w__wsys_up"] = frame["w"] * 1.2
    frame["w__wsys_down"] = frame["w"] * 0.8
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # unsorted ids
    return frame


def base_config(files_sig, files_bkg, **input_overrides) -> dict:
    cfg = {
        "name": "flat_test", "seed": 1, "luminosity": 1000.0,
        "input": {
            "kind": "flat", "id_column": "evt", "weight_column": "w", "mt_column": "mt",
            "charge_column": "q",
            "missing": {"value": -999.0, "fill": {"default": 0.0, "jet_pt": -1.0},
                        "flags": {"jet_missing": "jet_pt"}},
            "shifts": {"ptsc": {"columns": "{column}__{variant}"}},
            "declared_uncertainties": {"decl": {"pt_a": {"relative": 0.02}, "eta_a": {"absolute": 0.01}}},
        },
        "datasets": {
            "sig": {"process": "sig", "is_signal": True, "files": files_sig},
            "bkg": {"process": "bkg", "is_signal": False, "files": files_bkg},
        },
        "selection": {"cuts": {"pt_a": {"min": 20.0}}},
        "regions": {
            "signal": {"charge": "opposite", "mt_max": 50.0},
            "control_ss": {"charge": "same", "mt_max": 50.0},
            "control_mt": {"charge": "any", "mt_min": 70.0},
        },
        "signal_region": "signal",
        "features": [
            {"name": "pt_a", "kind": "momentum"},
            {"name": "eta", "kind": "angle", "column": "eta_a"},
            {"name": "jet_pt", "kind": "momentum"},
            {"name": "jet_missing", "kind": "integer"},
            {"name": "mt", "kind": "momentum"},
        ],
        "systematics": {
            "ptsc": {"type": "shift", "object": "tau", "uncertainty": 0.1},
            "decl": {"type": "shift", "object": "jet", "uncertainty": 0.05, "processes": ["sig"]},
            "wsys": {"type": "weight", "uncertainty": 0.2},
        },
        "models": {"nominal": {"architecture": "mlp", "hidden": [8]}},
    }
    cfg["input"].update(input_overrides)
    cfg["input"]["declared_uncertainties"] = {"decl": {"pt_a": {"relative": 0.02}, "eta": {"absolute": 0.01}}}
    return cfg


def write_config(folder, cfg) -> object:
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(path)


def write_formats(folder, frame, stem):
    import uproot

    frame.to_csv(folder / f"{stem}.csv", index=False)
    frame.to_parquet(folder / f"{stem}.parquet", index=False)
    with uproot.recreate(folder / f"{stem}.root") as f:
        # a flat TTree (mktree: uproot's plain assignment would write an RNTuple)
        f.mktree("events", {c: frame[c].to_numpy().dtype for c in frame.columns})
        f["events"].extend({c: frame[c].to_numpy() for c in frame.columns})


@pytest.fixture
def flat_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_formats(data, make_frame(1, label=1), "sig")
    write_formats(data, make_frame(2, id_offset=100000, label=0), "bkg")
    return tmp_path


def tables_for(folder, suffix, **overrides):
    cfg = write_config(folder, base_config([f"data/sig.{suffix}"], [f"data/bkg.{suffix}"], **overrides))
    return cfg, read_flat_datasets(cfg)


def test_csv_parquet_root_give_identical_tables(flat_files):
    results = {s: tables_for(flat_files, s)[1] for s in ("csv", "parquet", "root")}
    ref = results["csv"]
    for suffix in ("parquet", "root"):
        for name in ("sig", "bkg"):
            a, b = ref[name], results[suffix][name]
            assert sorted(a.columns) == sorted(b.columns)
            for col in a.columns:
                assert a.columns[col].dtype == b.columns[col].dtype, col
                assert np.array_equal(a.columns[col], b.columns[col]), (suffix, name, col)
            strip = lambda m: {k: v for k, v in m.extra.items() if k != "input"}  # noqa: E731
            assert strip(a.meta) == strip(b.meta)
            assert a.meta.variants == b.meta.variants


def test_layout_ids_weights_regions_and_column_shifts(flat_files):
    cfg, tables = tables_for(flat_files, "csv")
    raw = make_frame(1, label=1).sort_values("evt").reset_index(drop=True)
    t = tables["sig"]
    assert t.n_events == N
    assert t.variants == ["nominal", "ptsc_up", "ptsc_down"]  # declared-only 'decl': no variants
    assert t.meta.weight_variations == ["wsys_up", "wsys_down"]
    # single id column -> run=1, luminosityBlock=0, event=id, sorted
    assert (t.columns["run"] == 1).all() and (t.columns["luminosityBlock"] == 0).all()
    assert np.array_equal(t.columns["event"], raw["evt"].to_numpy().astype(np.uint64))
    assert t.columns["run"].dtype == np.uint32 and t.columns["event"].dtype == np.uint64
    assert np.array_equal(t.weights(), raw["w"].to_numpy())
    assert np.allclose(t.weights("wsys_up"), 1.2 * raw["w"].to_numpy())
    assert t.columns["is_signal"].all() and not tables["bkg"].columns["is_signal"].any()
    # shifted columns become the variants; features without shifted partners stay bit-identical
    assert np.array_equal(t.features_of("ptsc_up", ["pt_a"])[:, 0], (raw["pt_a"] * 1.1).to_numpy().astype(np.float32))
    assert np.array_equal(t.features_of("ptsc_up", ["mt"])[:, 0], (raw["mt"] + 5.0).to_numpy().astype(np.float32))
    for f in ("eta", "jet_pt", "jet_missing"):
        assert np.array_equal(t.features_of("ptsc_up", [f]), t.features_of("nominal", [f]))
    # regions per variant: cut pt_a >= 20 and mT window on the *shifted* columns, charge from q
    for variant, scale, dmt in (("nominal", 1.0, 0.0), ("ptsc_up", 1.1, 5.0), ("ptsc_down", 0.9, -5.0)):
        pt, mt, q = raw["pt_a"].to_numpy() * scale, raw["mt"].to_numpy() + dmt, raw["q"].to_numpy()
        assert np.array_equal(t.in_region("signal", variant), (pt >= 20) & (mt < 50) & (q < 0))
        assert np.array_equal(t.in_region("control_ss", variant), (pt >= 20) & (mt < 50) & (q > 0))
        assert np.array_equal(t.in_region("control_mt", variant), (pt >= 20) & (mt >= 70))
    # migration really happens with these shifts
    assert t.in_region("signal", "ptsc_up").sum() != t.in_region("signal", "nominal").sum()
    cf = t.meta.extra["cutflow"]
    assert cf["nominal"]["read"] == N and cf["nominal"]["region signal"] == int(t.in_region("signal").sum())


def test_missing_values_fill_flag_and_drop(flat_files):
    raw = make_frame(1, label=1).sort_values("evt").reset_index(drop=True)
    miss = raw["jet_pt"].to_numpy() == -999.0
    assert 0 < miss.sum() < N
    _, tables = tables_for(flat_files, "csv")
    t = tables["sig"]
    for v in t.variants:
        X = t.features_of(v)
        assert np.isfinite(X).all() and not (X == -999.0).any()
    jet = t.features_of("nominal", ["jet_pt"])[:, 0]
    assert (jet[miss] == -1.0).all()  # per-feature fill
    assert np.array_equal(jet[~miss], raw["jet_pt"].to_numpy()[~miss].astype(np.float32))
    assert np.array_equal(t.features_of("nominal", ["jet_missing"])[:, 0], miss.astype(np.float32))
    assert t.meta.extra["missing"]["counts_nominal"]["jet_pt"] == int(miss.sum())
    # fill keeps events in regions; drop removes events with a missing feature from every region
    assert t.in_any_region()[miss].any()
    _, dropped = tables_for(flat_files, "csv", missing={"value": -999.0, "treatment": "drop",
                                                        "flags": {"jet_missing": "jet_pt"}})
    d = dropped["sig"]
    for v in d.variants:
        assert not d.in_any_region(v)[miss].any()
        assert np.array_equal(d.in_any_region(v)[~miss], t.in_any_region(v)[~miss])
    assert np.array_equal(d.features_of("nominal", ["jet_pt"])[:, 0][miss], np.zeros(miss.sum(), np.float32))


def test_declared_uncertainties_go_to_meta(flat_files):
    _, tables = tables_for(flat_files, "parquet")
    assert tables["sig"].meta.extra["declared_uncertainties"] == {
        "decl": {"pt_a": {"relative": 0.02}, "eta": {"absolute": 0.01}}}
    # the systematic applies to process 'sig' only: no envelope for the background
    assert tables["bkg"].meta.extra["declared_uncertainties"] == {"decl": {}}
    sigma, relative = declared_sigmas(tables["sig"], "decl")
    assert sigma == {"pt_a": 0.02, "eta": 0.01} and relative == {"pt_a": True, "eta": False}
    assert declared_sigmas(tables["bkg"], "decl") == ({}, {})
    with pytest.raises(AuditError, match="ptsc"):
        declared_sigmas(tables["sig"], "ptsc")
    # the form the attack stage's envelope takes: relative sigma of a 0.0 fill stays 0
    from hsaudit.attacks.envelope import Envelope

    t = tables["sig"]
    env = Envelope.from_uncertainties(t.features_of(), sigma, relative, feature_names=t.features)
    half = (env.upper - env.lower).numpy() / 2
    np.testing.assert_allclose(half[:, 0], 0.02 * np.abs(t.features_of(features=["pt_a"])[:, 0]), rtol=1e-4)
    np.testing.assert_allclose(half[:, 1], 0.01, rtol=1e-4)
    assert (half[:, 2:] == 0).all()


def test_write_read_roundtrip(flat_files, tmp_path):
    _, tables = tables_for(flat_files, "root", tree="events")
    path = tmp_path / "out" / "sig.parquet"
    tables["sig"].write(path)
    back = FeatureTable.read(path)
    assert back.meta.extra["declared_uncertainties"] == tables["sig"].meta.extra["declared_uncertainties"]
    for col in back.meta.variants:
        assert np.array_equal(back.features_of(col), tables["sig"].features_of(col))


def test_label_column_splits_one_mixed_file(tmp_path):
    mixed = pd.concat([make_frame(1, label=1), make_frame(2, id_offset=100000, label=0)], ignore_index=True)
    mixed.to_parquet(tmp_path / "mixed.parquet", index=False)
    cfg = write_config(tmp_path, base_config(["mixed.parquet"], ["mixed.parquet"], label={"column": "lab", "signal": 1}))
    tables = read_flat_datasets(cfg)
    assert tables["sig"].n_events == N and tables["bkg"].n_events == N
    assert (tables["sig"].columns["event"] < 100000).all() and (tables["bkg"].columns["event"] >= 100000).all()
    assert tables["sig"].meta.extra["cutflow"]["nominal"]["label"] == N


def test_cross_section_normalisation_env_var_and_glob(flat_files, monkeypatch):
    monkeypatch.setenv("FLAT_TEST_DATA", str(flat_files / "data"))
    cfg = base_config(["${FLAT_TEST_DATA}/sig.c*v"], ["data/bkg.csv"])
    cfg["datasets"]["sig"]["cross_section"] = 2.0
    cfg = write_config(flat_files, cfg)
    t = read_flat_dataset(cfg.datasets["sig"], cfg)
    assert t.weights().sum() == pytest.approx(2.0 * 1000.0)
    assert t.weights("wsys_up").sum() == pytest.approx(1.2 * 2.0 * 1000.0)


def test_rows_without_id_column_and_three_id_columns(tmp_path):
    frame = make_frame(3).drop(columns=["evt"])
    frame.to_csv(tmp_path / "a.csv", index=False)
    cfg = base_config(["a.csv"], ["a.csv"])
    del cfg["input"]["id_column"]
    loaded = write_config(tmp_path, cfg)
    t = read_flat_dataset(loaded.datasets["sig"], loaded)
    assert np.array_equal(t.columns["event"], np.arange(N, dtype=np.uint64))
    frame["run"], frame["luminosityBlock"], frame["event"] = 5, 7, np.arange(N)[::-1]
    frame.to_csv(tmp_path / "a.csv", index=False)
    cfg_loaded = write_config(tmp_path, cfg)
    t = read_flat_dataset(cfg_loaded.datasets["sig"], cfg_loaded)
    assert (t.columns["run"] == 5).all() and (t.columns["luminosityBlock"] == 7).all()
    assert np.array_equal(t.columns["event"], np.arange(N, dtype=np.uint64))  # sorted


# -- errors ------------------------------------------------------------------------------------
def expect_error(folder, cfg_dict, *fragments):
    # a bad option fails when the configuration is loaded, a bad file when it is read
    with pytest.raises(AuditError) as err:
        read_flat_datasets(write_config(folder, cfg_dict))
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return str(err.value)


def test_missing_file_names_the_file(flat_files):
    cfg = base_config(["data/nope.csv"], ["data/bkg.csv"])
    expect_error(flat_files, cfg, "nope.csv", "does not exist", "sig")


def test_missing_column_names_column_and_file(flat_files):
    frame = make_frame(1).drop(columns=["eta_a"])
    frame.to_csv(flat_files / "data" / "broken.csv", index=False)
    expect_error(flat_files, base_config(["data/broken.csv"], ["data/bkg.csv"]), "'eta_a'", "broken.csv")


def test_nan_in_feature_names_column_and_file(flat_files):
    frame = make_frame(1)
    frame.loc[17, "pt_a"] = np.nan
    frame.to_parquet(flat_files / "data" / "nan.parquet", index=False)
    expect_error(flat_files, base_config(["data/nan.parquet"], ["data/bkg.csv"]), "'pt_a'", "nan.parquet", "NaN")
    frame = make_frame(1)
    frame.loc[3, "w"] = np.inf
    frame.to_csv(flat_files / "data" / "inf.csv", index=False)
    expect_error(flat_files, base_config(["data/inf.csv"], ["data/bkg.csv"]), "'w'", "inf.csv")


def test_no_partial_output_when_a_later_file_fails(flat_files, tmp_path):
    bad = make_frame(5, id_offset=500000).drop(columns=["mt"])
    bad.to_csv(flat_files / "data" / "second.csv", index=False)
    cfg = write_config(flat_files, base_config(["data/sig.csv", "data/second.csv"], ["data/bkg.csv"]))
    out = tmp_path / "merged" / "sig.parquet"
    with pytest.raises(AuditError, match="second.csv"):
        read_flat_dataset(cfg.datasets["sig"], cfg).write(out)
    assert not out.exists() and not out.parent.exists()


def test_bad_options_name_the_key(flat_files):
    base = base_config(["data/sig.csv"], ["data/bkg.csv"])
    cfg = copy.deepcopy(base)
    cfg["input"]["colour"] = "red"
    expect_error(flat_files, cfg, "input.colour")
    cfg = copy.deepcopy(base)
    del cfg["input"]["charge_column"]
    expect_error(flat_files, cfg, "regions.signal.charge", "charge_column")
    cfg = copy.deepcopy(base)
    cfg["input"]["declared_uncertainties"] = {"decl": {"pt_a": {"relative": -0.1}}}
    expect_error(flat_files, cfg, "input.declared_uncertainties.decl.pt_a.relative")
    cfg = copy.deepcopy(base)
    cfg["input"]["declared_uncertainties"] = {"decl": {"nope": {"relative": 0.1}}}
    expect_error(flat_files, cfg, "input.declared_uncertainties.decl.nope", "unknown feature")
    cfg = copy.deepcopy(base)
    cfg["input"]["shifts"] = {"ptsc": {"recipe": "nope"}}
    expect_error(flat_files, cfg, "input.shifts.ptsc.recipe")
    cfg = copy.deepcopy(base)
    cfg["input"]["missing"]["treatment"] = "ignore"
    expect_error(flat_files, cfg, "input.missing.treatment")


def test_shift_without_source_is_an_error(flat_files):
    cfg = base_config(["data/sig.csv"], ["data/bkg.csv"])
    cfg["systematics"]["other"] = {"type": "shift", "object": "jet", "uncertainty": 0.1}
    expect_error(flat_files, cfg, "systematics.other", "input.declared_uncertainties.other")


def test_unset_env_var_and_duplicate_ids(flat_files, monkeypatch):
    monkeypatch.delenv("FLAT_TEST_UNSET", raising=False)
    expect_error(flat_files, base_config(["${FLAT_TEST_UNSET}/sig.csv"], ["data/bkg.csv"]), "FLAT_TEST_UNSET")
    expect_error(flat_files, base_config(["data/sig.csv", "data/sig.parquet"], ["data/bkg.csv"]),
                 "appears 2 times")


def test_config_works_from_another_working_directory(flat_files, tmp_path, monkeypatch):
    cfg = write_config(flat_files, base_config(["data/sig.csv"], ["data/bkg.csv"]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert read_flat_dataset(cfg.datasets["sig"], cfg).n_events == N
    assert os.getcwd() == str(elsewhere)


def test_declared_uncertainties_become_coherent_variants_in_the_sample(flat_files):
    from hsaudit.samples import assemble

    _, tables = tables_for(flat_files, "parquet")
    sig, bkg = tables["sig"], tables["bkg"]
    sample = assemble([sig, bkg])
    assert {"decl_up", "decl_down"} <= set(sample.variants)
    n_sig = sig.n_events
    j_pt, j_eta = sample.features.index("pt_a"), sample.features.index("eta")
    x = sample.X["nominal"]
    # the systematic's +-1 sigma: relative on pt_a, absolute on eta, signal only
    assert np.allclose(sample.X["decl_up"][:n_sig, j_pt], x[:n_sig, j_pt] * 1.02, rtol=1e-6)
    assert np.allclose(sample.X["decl_down"][:n_sig, j_eta], x[:n_sig, j_eta] - 0.01, atol=1e-6)
    assert np.array_equal(sample.X["decl_up"][n_sig:], x[n_sig:])
    for r in sample.regions:
        assert np.array_equal(sample.region[(r, "decl_up")], sample.region[(r, "nominal")])
    # the sample's envelope of 'decl' is then built like any shift's
    from hsaudit.attacks.envelope import Envelope

    env = Envelope.from_variants(x, sample.X["decl_up"], sample.X["decl_down"], feature_names=sample.features)
    assert env.width[n_sig:].abs().max().item() == 0.0
    assert env.width[:n_sig, j_eta].min().item() > 0


def test_shift_columns_needed_only_where_the_systematic_applies(flat_files):
    """systematics.<s>.processes: a dataset the shift does not apply to needs no shifted columns."""
    plain = make_frame(1).drop(columns=["pt_a__ptsc_up", "pt_a__ptsc_down", "mt__ptsc_up", "mt__ptsc_down"])
    plain.to_csv(flat_files / "data" / "sig_plain.csv", index=False)
    cfg = base_config(["data/sig_plain.csv"], ["data/bkg.csv"])
    cfg["systematics"]["ptsc"]["processes"] = ["bkg"]
    tables = read_flat_datasets(write_config(flat_files, cfg))
    sig, bkg = tables["sig"], tables["bkg"]
    assert np.array_equal(sig.columns["pt_a__ptsc_up"], sig.columns["pt_a__nominal"])
    assert not np.array_equal(bkg.columns["pt_a__ptsc_up"], bkg.columns["pt_a__nominal"])
    # where it applies, the columns stay required
    cfg["systematics"]["ptsc"]["processes"] = ["sig", "bkg"]
    with pytest.raises(AuditError, match="systematics.ptsc: no shifted columns"):
        read_flat_datasets(write_config(flat_files, cfg))


def test_one_region_and_no_object_for_flat_shifts(flat_files):
    cfg = base_config(["data/sig.csv"], ["data/bkg.csv"])
    cfg["regions"] = {"signal": {"charge": "opposite", "mt_max": 50.0}}
    del cfg["systematics"]["ptsc"]["object"]
    del cfg["systematics"]["decl"]["object"]
    loaded = write_config(flat_files, cfg)
    assert loaded.control_regions == [] and loaded.systematics["ptsc"].object is None
    tables = read_flat_datasets(loaded)
    assert tables["sig"].regions == ["signal"] and tables["sig"].in_region("signal").any()
    # NanoAOD shifts still move an object
    nano = load_config("ci").raw
    nano = copy.deepcopy(nano)
    del nano["systematics"]["tau_es"]["object"]
    path = flat_files / "nano.yaml"
    path.write_text(yaml.safe_dump(nano))
    with pytest.raises(AuditError, match="systematics.tau_es.object: missing"):
        load_config(path)


def test_sentinel_values_without_missing_option_warn_naming_column_and_value(flat_files):
    from hsaudit.flat_tables import FlatInputWarning

    cfg = base_config(["data/sig.csv"], ["data/bkg.csv"])
    del cfg["input"]["missing"]
    cfg["features"] = [f for f in cfg["features"] if f["name"] != "jet_missing"]
    with pytest.warns(FlatInputWarning, match=r"sig\.csv: column 'jet_pt' has \d+ value\(s\) equal to -999.*input\.missing\.value: -999"):
        tables = read_flat_datasets(write_config(flat_files, cfg))
    assert any("'jet_pt'" in w for w in tables["sig"].meta.extra["warnings"])
    # with input.missing the marker is handled, and nothing is said
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error", FlatInputWarning)
        read_flat_datasets(write_config(flat_files, base_config(["data/sig.csv"], ["data/bkg.csv"])))


def test_header_only_csv(flat_files):
    from hsaudit.flat_tables import FlatInputWarning

    make_frame(1).iloc[:0].to_csv(flat_files / "data" / "header.csv", index=False)
    expect_error(flat_files, base_config(["data/header.csv"], ["data/bkg.csv"]), "header.csv", "no data rows", "sig")
    # next to a file with rows it is skipped with a warning naming it
    cfg = write_config(flat_files, base_config(["data/header.csv", "data/sig.csv"], ["data/bkg.csv"]))
    with pytest.warns(FlatInputWarning, match=r"skipping .*header\.csv: it has no data rows"):
        table = read_flat_dataset(cfg.datasets["sig"], cfg)
    assert table.n_events == N


def test_own_torchscript_model_on_flat_input(flat_files, tmp_path):
    """The import check of a user's network probes selected events with finite features."""
    import torch

    from hsaudit.classifier_stage import probe_events
    from hsaudit.ml.modelio import import_user_model, load_model
    from hsaudit.samples import assemble

    cfg = write_config(flat_files, base_config(["data/sig.csv"], ["data/bkg.csv"]))
    sample = assemble(list(read_flat_datasets(cfg).values()))
    features = ["mt", "pt_a"]  # a subset, in the model's own order

    class Net(torch.nn.Module):
        def forward(self, x):
            return torch.sigmoid(0.01 * x[:, 0] - 0.02 * x[:, 1])

    path = tmp_path / "net.pt"
    torch.jit.script(Net()).save(str(path))
    probe = probe_events(sample, features)
    assert probe.shape[1] == 2 and np.isfinite(probe).all()
    assert len(probe) == min(512, int(sample.selected("nominal").sum()))
    import_user_model(path, features, sample.features, tmp_path / "model", probe=probe)
    model, info = load_model(tmp_path / "model", available_features=sample.features)
    assert info["features"] == features
