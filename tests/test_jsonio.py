"""numpy / torch values to JSON: round-trips, key conventions, non-finite handling."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hsaudit.jsonio import json_default, to_json


def test_nested_numpy_values_round_trip_through_json():
    obj = {"a": np.arange(3), "b": (np.float32(0.1), np.int64(7), np.bool_(True)), "c": [{"d": np.eye(2)}],
           "p": Path("x") / "y.json", "s": "text", "n": None}
    out = to_json(obj)
    back = json.loads(json.dumps(out, allow_nan=False))
    assert back == {"a": [0, 1, 2], "b": [float(np.float32(0.1)), 7, True], "c": [{"d": [[1.0, 0.0], [0.0, 1.0]]}],
                    "p": "x/y.json", "s": "text", "n": None}
    assert type(out["b"][1]) is int and type(out["b"][2]) is bool and type(out["a"][0]) is int


def test_same_text_as_json_dumps_with_the_default_hook():
    obj = {"x": np.linspace(0, 1, 7), "y": np.float64(1 / 3), "z": [np.int32(-4), np.uint8(200)], "w": np.float32(2.5)}
    a = json.dumps(to_json(obj), indent=2, sort_keys=True)
    b = json.dumps(obj, indent=2, sort_keys=True, default=json_default)
    assert a == b


def test_keys_become_strings_as_json_writes_them():
    out = to_json({1: "a", 2.5: "b", None: "d", np.int64(3): "e", "k": "f"})
    assert list(out) == ["1", "2.5", "null", "3", "k"]
    assert to_json({True: 1, False: 0}) == {"true": 1, "false": 0}
    assert json.loads(json.dumps({1: 0, 2.5: 0, None: 0})) == {k: 0 for k in ["1", "2.5", "null"]}


def test_nonfinite_floats_are_kept_or_become_null():
    obj = {"nan": np.float64("nan"), "inf": [float("inf"), np.array([-np.inf, 1.0])], "ok": 1.5}
    kept = to_json(obj)
    assert math.isnan(kept["nan"]) and kept["inf"][0] == math.inf and kept["inf"][1] == [-math.inf, 1.0]
    strict = to_json(obj, nonfinite="null")
    assert strict == {"nan": None, "inf": [None, [None, 1.0]], "ok": 1.5}
    json.dumps(strict, allow_nan=False)  # strict JSON
    with pytest.raises(ValueError, match="nonfinite"):
        to_json(obj, nonfinite="zero")


def test_torch_tensors_and_unknown_objects():
    assert to_json({"t": torch.tensor([1.5, 2.0])}) == {"t": [1.5, 2.0]}
    assert json.dumps(torch.tensor([3]), default=json_default) == "[3]"
    with pytest.raises(TypeError, match="object"):
        json.dumps(object(), default=json_default)
