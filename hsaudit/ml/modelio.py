"""Model files: save, load, and bring-your-own TorchScript models.

A model directory holds

``weights.pt``             the state dict (tensors only), read with ``torch.load(weights_only=True)``
``model.json``             spec, feature list, n_features and free-form provenance
``model.torchscript.pt``   a TorchScript export (standalone: usable without this package)

Loading never unpickles arbitrary code: the state dict is read with ``weights_only=True``
and TorchScript with ``torch.jit.load``. A user can audit an existing network instead of
training one: ``import_user_model`` validates a TorchScript file against the feature list it
claims to expect (feature count, output shape and range in [0, 1], differentiability in the
inputs, which attacks need) and writes a model directory without ``weights.pt``. Every
failure is an ``AuditError`` and leaves no output behind (files are written to a temporary
directory and moved into place at the end).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hsaudit.errors import AuditError
from hsaudit.files import atomic_directory
from hsaudit.jsonio import json_default
from hsaudit.ml.models import MLP, build_model, resolve_spec

WEIGHTS_FILE = "weights.pt"
INFO_FILE = "model.json"
TORCHSCRIPT_FILE = "model.torchscript.pt"
FORMAT = "hidden-systematics-audit/model"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _write_atomically(directory, writer) -> dict:
    """Run ``writer(tmpdir)`` and move what it wrote into ``directory``; nothing is left
    behind (neither in ``directory`` nor the temporary folder) if ``writer`` fails."""
    directory = Path(directory)
    # a concurrent run of the same task that created it first: replace file by file
    with atomic_directory(directory, existing="replace_files") as tmp:
        writer(tmp)
        names = sorted(p.name for p in tmp.iterdir())
    return {name: directory / name for name in names}


def _script(model: nn.Module) -> torch.jit.ScriptModule:
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the portable format
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(model)
    finally:
        model.train(was_training)


def save_model(model: MLP, directory, spec: dict, features: list[str] | None = None, extra: dict | None = None) -> dict:
    """Write state dict + ``model.json`` + TorchScript export into ``directory``.

    Returns {file name: path}. ``extra`` is free-form JSON-serialisable provenance (e.g. the
    training summary).
    """
    spec = resolve_spec(spec)
    if features is not None and len(features) != model.n_features:
        raise AuditError(f"feature list mismatch: {len(features)} names for a model with {model.n_features} inputs")
    # a CPU copy: the caller's model stays where it is
    cpu_model = copy.deepcopy(model).to("cpu") if next(model.parameters()).device.type != "cpu" else model
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "native",
        "spec": spec,
        "n_features": int(model.n_features),
        "features": list(features) if features is not None else None,
        "extra": extra or {},
    }
    text = json.dumps(info, indent=2, sort_keys=True, default=json_default)

    def writer(tmp: Path):
        torch.save({k: v.detach().cpu() for k, v in cpu_model.state_dict().items()}, tmp / WEIGHTS_FILE)
        _script(cpu_model).save(str(tmp / TORCHSCRIPT_FILE))
        (tmp / INFO_FILE).write_text(text)

    return _write_atomically(directory, writer)


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def read_info(directory) -> dict:
    path = Path(directory) / INFO_FILE
    if not path.is_file():
        raise AuditError(f"'{directory}' is not a model directory: {INFO_FILE} is missing")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AuditError(f"cannot read model description {path}: {e}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise AuditError(f"{path} is not a model description written by this tool")
    if info.get("format_version") != FORMAT_VERSION:
        raise AuditError(f"{path} has model format version {info.get('format_version')}, this tool reads {FORMAT_VERSION}")
    return info


def check_feature_list(model_features, available_features) -> list[str]:
    """The features a model expects must all be available (e.g. in the feature table).
    Returns the model's list: the columns to feed it, in its order."""
    if model_features is None:
        return list(available_features)
    missing = [f for f in model_features if f not in set(available_features)]
    if missing:
        raise AuditError(
            f"feature list mismatch: the model expects features {missing} that are not available; "
            f"available: {list(available_features)}"
        )
    return list(model_features)


def load_state_dict_file(path) -> dict:
    """Read a state dict without unpickling code; AuditError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"model weights file {path} does not exist")
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise AuditError(f"{path} is not a readable weights file (state dict), corrupt or truncated: "
                             f"UnpicklingError: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
        # torch's own message advises weights_only=False, i.e. running the file's code: never
        raise AuditError(
            f"{path} was refused: it holds Python objects besides tensors, and model files are "
            "loaded without running code from them; save only the state dict "
            "(torch.save(model.state_dict(), path))"
        ) from None
    except Exception as e:  # corrupt or truncated file, not a torch file
        first = next((line for line in str(e).splitlines() if line.strip() and "weights_only" not in line), "")
        raise AuditError(f"{path} is not a readable weights file (state dict), corrupt or truncated: "
                         f"{type(e).__name__}{': ' + first[:200] if first else ''}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AuditError(f"{path} does not contain a state dict (a mapping of names to tensors)")
    return state


def load_torchscript(path, device="cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` with a clear error for files that are not TorchScript models."""
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"TorchScript model file {path} does not exist")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as e:
        raise AuditError(
            f"{path} is not a TorchScript model (export it with torch.jit.script(model).save(path) "
            f"or torch.jit.trace): {type(e).__name__}"
        ) from None
    return model.eval()


def load_model(directory, device="cpu", available_features=None, prefer: str = "native"):
    """Load a model directory; returns (model, info).

    With ``prefer="native"`` and a ``weights.pt`` present, the model is rebuilt from its spec
    (an ``MLP``); otherwise the TorchScript export is loaded (bring-your-own models have
    only that). If ``available_features`` is given, the model's feature list is checked
    against it (``check_feature_list``).
    """
    info = read_info(directory)
    directory = Path(directory)
    if available_features is not None:
        check_feature_list(info.get("features"), available_features)
    n = int(info["n_features"])
    if prefer == "native" and (directory / WEIGHTS_FILE).is_file():
        state = load_state_dict_file(directory / WEIGHTS_FILE)
        model = build_model(info["spec"], n)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise AuditError(f"weights in {directory / WEIGHTS_FILE} do not fit the model spec in {INFO_FILE}: {str(e).splitlines()[0]}") from None
        return model.to(device).eval(), info
    return load_torchscript(directory / TORCHSCRIPT_FILE, device), info


# ---------------------------------------------------------------------------------------
# bring your own model
# ---------------------------------------------------------------------------------------
class _FlattenOutput(nn.Module):
    """Adapts a classifier with output shape (N, 1) to the (N,) convention."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).reshape(-1)


def validate_user_model(path, features, probe=None, n_probe: int = 512, seed: int = 0, tolerance: float = 1e-6):
    """Load a user's TorchScript classifier and check that it fits the audit.

    ``features``: the feature names (or their number) the model expects, in order.
    ``probe``: optional (M, F) events in physical units to run it on (recommended: a few
    hundred real events); by default standard-normal inputs.
    Checks: it is a TorchScript model; it accepts (M, F) float32 inputs; its output has shape
    (M,) or (M, 1) (the latter is flattened); outputs are finite and in [0, 1] (a sigmoid
    output, not logits); outputs are differentiable in the inputs (attacks need gradients).
    Returns the (possibly wrapped) TorchScript module.
    """
    n_features = features if isinstance(features, (int, np.integer)) else len(features)
    if n_features < 1:
        raise AuditError("a user model needs a non-empty feature list")
    model = load_torchscript(path)
    if probe is None:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(n_probe, n_features, generator=gen)
    else:
        probe = np.asarray(probe, dtype=np.float32)
        if probe.ndim != 2 or probe.shape[1] != n_features or len(probe) == 0:
            raise AuditError(f"probe events have shape {probe.shape}, expected (M, {n_features})")
        if not np.isfinite(probe).all():
            raise AuditError("probe events contain NaN or inf")
        x = torch.from_numpy(probe)
    m = x.shape[0]
    x = x.clone().requires_grad_(True)
    try:
        out = model(x)
    except Exception as e:
        raise AuditError(
            f"user model {path} fails on input of shape ({m}, {n_features}) — feature list mismatch? "
            f"It was declared to take {n_features} features: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise AuditError(f"user model {path} must return one tensor of probabilities, got {type(out).__name__}")
    if tuple(out.shape) not in ((m,), (m, 1)):
        raise AuditError(f"user model {path} returns shape {tuple(out.shape)} for {m} events; expected ({m},) or ({m}, 1)")
    if not torch.isfinite(out).all():
        raise AuditError(f"user model {path} returns NaN or inf outputs")
    lo, hi = float(out.min()), float(out.max())
    if lo < -tolerance or hi > 1 + tolerance:
        raise AuditError(
            f"user model {path} returns values in [{lo:.3g}, {hi:.3g}]; outputs must be probabilities in [0, 1] "
            "(end the network in a sigmoid; logits are not accepted)"
        )
    if not out.requires_grad:
        raise AuditError(f"user model {path} output is not differentiable in its inputs; the attacks need gradients")
    if out.dim() == 2:
        model = _script(_FlattenOutput(model))
    return model.eval()


def import_user_model(path, model_features: list[str], available_features, directory, probe=None, extra: dict | None = None) -> dict:
    """Validate a user's TorchScript classifier and write it as a model directory
    (``model.torchscript.pt`` + ``model.json``; no ``weights.pt``). ``model_features`` is the
    feature list the model expects (from the configuration), checked against
    ``available_features``. Returns {file name: path}; on any error nothing is written.
    """
    if not model_features:
        raise AuditError("a user model needs the list of features it expects (in order)")
    features = check_feature_list(model_features, available_features)
    model = validate_user_model(path, features, probe=probe)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "torchscript",
        "spec": None,
        "n_features": len(features),
        "features": features,
        "extra": {"source": str(path), **(extra or {})},
    }
    text = json.dumps(info, indent=2, sort_keys=True, default=json_default)

    def writer(tmp: Path):
        model.save(str(tmp / TORCHSCRIPT_FILE))
        (tmp / INFO_FILE).write_text(text)

    return _write_atomically(directory, writer)
