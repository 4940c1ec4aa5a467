"""Model files: round trip, no unpickling of code, bring-your-own TorchScript validation."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from hsaudit.errors import AuditError
from hsaudit.ml.models import build_model
from hsaudit.ml.modelio import (
    INFO_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    import_user_model,
    load_model,
    load_state_dict_file,
    load_torchscript,
    save_model,
    validate_user_model,
)

FEATURES = ["tau_pt", "met", "dphi"]


def _model():
    return build_model({"hidden_layers": [16, 16]}, 3, np.array([40.0, 30.0, 0.0]), np.array([15.0, 20.0, 1.5]),
                       generator=torch.Generator().manual_seed(0))


def _x(n=50):
    return torch.from_numpy(np.random.default_rng(0).normal([40, 30, 0], [15, 20, 1.5], (n, 3)).astype(np.float32))


def test_round_trip_native_and_torchscript(tmp_path):
    m = _model()
    paths = save_model(m, tmp_path / "model", {"hidden_layers": [16, 16]}, FEATURES, extra={"auc": np.float32(0.8)})
    assert set(paths) == {WEIGHTS_FILE, INFO_FILE, TORCHSCRIPT_FILE}
    info = json.loads((tmp_path / "model" / INFO_FILE).read_text())
    assert info["features"] == FEATURES and info["n_features"] == 3 and info["extra"]["auc"] == pytest.approx(0.8)
    x = _x()
    native, _ = load_model(tmp_path / "model", available_features=FEATURES + ["extra"])
    script, _ = load_model(tmp_path / "model", prefer="torchscript")
    assert isinstance(script, torch.jit.ScriptModule)
    assert torch.equal(native(x), m(x))
    assert torch.allclose(script(x), m(x), atol=1e-6)
    with pytest.raises(AuditError, match="feature list mismatch.*'dphi'"):
        load_model(tmp_path / "model", available_features=["tau_pt", "met"])


def test_save_with_wrong_feature_list_writes_nothing(tmp_path):
    with pytest.raises(AuditError, match="feature list mismatch"):
        save_model(_model(), tmp_path / "m", {"hidden_layers": [16, 16]}, FEATURES[:2])
    assert list(tmp_path.iterdir()) == []


def test_not_a_model_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a model at all")
    with pytest.raises(AuditError, match="not a TorchScript model"):
        load_torchscript(junk)
    with pytest.raises(AuditError, match="not a readable weights file"):
        load_state_dict_file(junk)
    # a state dict is not a TorchScript model either
    sd = tmp_path / "sd.pt"
    torch.save(_model().state_dict(), sd)
    with pytest.raises(AuditError, match="not a TorchScript model"):
        load_torchscript(sd)
    with pytest.raises(AuditError, match="does not exist"):
        load_torchscript(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("code executed while loading!",))


def test_pickled_code_is_refused(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _Evil()}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    capsys.readouterr()
    with pytest.raises(AuditError, match="was refused: it holds Python objects besides tensors") as err:
        load_state_dict_file(evil)
    assert "code executed" not in capsys.readouterr().out
    # never the advice to load it with weights_only=False (which would run its code)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


def test_mismatched_weights_for_spec(tmp_path):
    save_model(_model(), tmp_path / "m", {"hidden_layers": [16, 16]}, FEATURES)
    info = json.loads((tmp_path / "m" / INFO_FILE).read_text())
    info["spec"]["hidden_layers"] = [32, 16]
    (tmp_path / "m" / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(AuditError, match="do not fit the model spec"):
        load_model(tmp_path / "m")


# -- bring your own model -------------------------------------------------------------------
class _UserNet(torch.nn.Module):
    def __init__(self, n_in, logits=False, column=False):
        super().__init__()
        self.lin = torch.nn.Linear(n_in, 1)
        self.logits = logits
        self.column = column

    def forward(self, x):
        z = self.lin(x / 50.0)
        out = z if self.logits else torch.sigmoid(z)
        return out if self.column else out.squeeze(-1)


def _script_file(tmp_path, name, **kw):
    torch.manual_seed(0)
    path = tmp_path / name
    net = _UserNet(kw.pop("n_in", 3), **kw)
    if kw.get("logits"):
        with torch.no_grad():
            net.lin.bias.fill_(5.0)  # make sure some logits leave [0, 1]
    torch.jit.script(net).save(str(path))
    return path


def test_user_model_accepted_and_column_output_flattened(tmp_path):
    path = _script_file(tmp_path, "user.pt", column=True)
    out = import_user_model(path, FEATURES, FEATURES + ["other"], tmp_path / "out", probe=_x().numpy())
    assert set(out) == {INFO_FILE, TORCHSCRIPT_FILE}
    model, info = load_model(tmp_path / "out")
    assert info["kind"] == "torchscript" and info["features"] == FEATURES
    assert model(_x(7)).shape == (7,)


@pytest.mark.parametrize(
    "kw,model_features,msg",
    [
        ({"logits": True}, FEATURES, "probabilities in \\[0, 1\\]"),
        ({"n_in": 4}, FEATURES, "fails on input of shape \\(512, 3\\)"),
        ({}, ["tau_pt", "met", "mass"], "feature list mismatch.*'mass'"),
        ({}, [], "needs the list of features"),
    ],
)
def test_user_model_rejected_without_output(tmp_path, kw, model_features, msg):
    path = _script_file(tmp_path, "user.pt", **kw)
    with pytest.raises(AuditError, match=msg):
        import_user_model(path, model_features, FEATURES, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["user.pt"]  # no temporary leftovers


def test_user_file_not_a_model_no_output(tmp_path):
    junk = tmp_path / "user.pt"
    junk.write_text("{}")
    with pytest.raises(AuditError, match="not a TorchScript model"):
        import_user_model(junk, FEATURES, FEATURES, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_user_model_non_differentiable(tmp_path):
    class Hard(torch.nn.Module):
        def forward(self, x):
            return (x[:, 0] > 0).float()

    path = tmp_path / "hard.pt"
    torch.jit.script(Hard()).save(str(path))
    with pytest.raises(AuditError, match="not differentiable"):
        validate_user_model(path, 3)


def test_concurrent_saves_of_one_model_directory(tmp_path, monkeypatch):
    """Another run created the directory between our check and our rename: no 'Directory not
    empty', the directory holds a complete model."""
    target = tmp_path / "m"
    real_replace = os.replace
    calls = {"n": 0}

    def racing_replace(src, dst):
        if str(dst) == str(target) and calls["n"] == 0:
            calls["n"] += 1
            save_model(_model(), target, {"hidden_layers": [16, 16]}, FEATURES)  # the other run
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", racing_replace)  # the rename in hsaudit.files
    save_model(_model(), target, {"hidden_layers": [16, 16]}, FEATURES)
    assert calls["n"] == 1
    assert sorted(p.name for p in target.iterdir()) == sorted([WEIGHTS_FILE, INFO_FILE, "model.torchscript.pt"])
    load_model(target)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
