"""The NN-outputs artifact (hsaudit.nn_outputs): computed once per model, saved with one
column per variant, read back identically, and refused when it belongs to another sample."""

import numpy as np
import pytest
import torch

from hsaudit.errors import AuditError
from hsaudit.ml.evaluation import predict
from hsaudit.ml.models import MLP
from hsaudit.nn_outputs import NNOutputs
from hsaudit.samples import EventSample


def _sample(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    up = x * 1.05
    up[:7] = np.nan                      # events absent in a variant
    region = {("signal", v): np.ones(n, bool) for v in ("nominal", "s_up")}
    event_id = np.zeros(n, dtype=[("run", "u4"), ("luminosityBlock", "u4"), ("event", "u8")])
    event_id["event"] = np.arange(n)
    return EventSample(features=["a", "b", "c"], variants=["nominal", "s_up"], regions=["signal"],
                       X={"nominal": x, "s_up": up}, y=(rng.random(n) < 0.5).astype(np.int8),
                       weight=np.ones(n), weight_variations={}, region=region, event_id=event_id,
                       dataset=np.zeros(n, np.int16), datasets=["d"], processes=["p"])


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MLP(3, [8]).eval()


def test_compute_equals_prediction_and_round_trips(model, tmp_path):
    s = _sample()
    out = NNOutputs.compute(model, s)
    assert np.array_equal(out["nominal"], predict(model, s.X["nominal"]))
    assert np.isnan(out["s_up"][:7]).all() and np.isfinite(out["s_up"][7:]).all()
    out.save(tmp_path / "nn.npz")
    back = NNOutputs.load(tmp_path / "nn.npz", s)
    assert set(back.columns) == {"nominal", "s_up"} and back.features == ("a", "b", "c")
    for v in back.columns:
        assert np.array_equal(back[v], out[v], equal_nan=True)
    assert not [p for p in tmp_path.iterdir() if p.name != "nn.npz"]      # no temporaries left


def test_refuses_another_sample_unknown_variant_and_broken_file(model, tmp_path):
    out = NNOutputs.compute(model, _sample())
    out.save(tmp_path / "nn.npz")
    with pytest.raises(AuditError, match="do not belong to this sample"):
        NNOutputs.load(tmp_path / "nn.npz", _sample(n=299))
    with pytest.raises(AuditError, match="no variant 'tau_es_up'"):
        out["tau_es_up"]
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(AuditError, match="rerun EvaluateModel"):
        NNOutputs.load(tmp_path / "bad.npz")
