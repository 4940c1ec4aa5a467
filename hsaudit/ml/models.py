"""Classifier networks for the audit: multilayer perceptrons that take features in physical units.

The default architecture is the one of Wunsch, Joerger, Wolf, Quast (2020), "Reducing the
dependence of the neural network function to systematic uncertainties in the input space":
two hidden layers of 200 ReLU units, one sigmoid output, Glorot (Xavier) initialisation.
Deeper / wider variants are available as named architectures.

The input standardisation ((x - mean) / std, moments from the training data, weighted) is
the model's first layer and is stored as non-trainable buffers. The model therefore takes
features in physical units (GeV, radians), which is what attacks and envelopes work in, and
a saved model is self-contained.

``forward`` returns probabilities of shape (N,) in [0, 1]; ``logits`` returns the
pre-sigmoid values, used by the training loop for a numerically stable loss.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hsaudit.errors import AuditError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}

# Named architectures: default hidden layers and activation. Explicit keys in a spec win.
ARCHITECTURES = {
    # Wunsch et al. (2020): 2 x 200 ReLU, sigmoid output.
    "mlp": {"hidden_layers": [200, 200], "activation": "relu"},
    # Deeper: the size Nachman & Shimmin (2019) use for networks of this kind, 4 x 300.
    "deep_mlp": {"hidden_layers": [300, 300, 300, 300], "activation": "relu"},
    # Wider and smoother: 3 x 512 SiLU.
    "wide_mlp": {"hidden_layers": [512, 512, 512], "activation": "silu"},
}

SPEC_KEYS = ("architecture", "hidden_layers", "activation", "dropout")


class Standardize(nn.Module):
    """Fixed (x - mean) / std; mean and std are buffers, never trained."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().to(torch.float32))
        self.register_buffer("std", std.detach().clone().to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLP(nn.Module):
    """Standardisation -> [Linear -> activation (-> dropout)] x L -> Linear(1) -> sigmoid."""

    def __init__(
        self,
        n_features: int,
        hidden_layers: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ):
        super().__init__()
        self.n_features = int(n_features)
        if mean is None:
            mean = torch.zeros(self.n_features)
        if std is None:
            std = torch.ones(self.n_features)
        self.standardize = Standardize(torch.as_tensor(mean), torch.as_tensor(std))
        layers: list[nn.Module] = []
        width = self.n_features
        for h in hidden_layers:
            layers.append(nn.Linear(width, int(h)))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.body = nn.Sequential(*layers)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-uniform weights, zero biases (Wunsch et al.); deterministic for a generator."""
        for m in self.body:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                nn.init.zeros_(m.bias)

    @torch.jit.export
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.standardize(x)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def resolve_spec(spec: dict | None) -> dict:
    """Fill a model spec with the defaults of its architecture and check it."""
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise AuditError(f"unknown model settings {unknown}; known: {list(SPEC_KEYS)}")
    arch = spec.get("architecture", "mlp")
    if arch not in ARCHITECTURES:
        raise AuditError(f"unknown model architecture '{arch}'; known: {sorted(ARCHITECTURES)}")
    out = {"architecture": arch, "dropout": 0.0, **ARCHITECTURES[arch]}
    out.update({k: v for k, v in spec.items() if v is not None})
    hidden = out["hidden_layers"]
    if (
        not isinstance(hidden, (list, tuple))
        or not hidden
        or not all(isinstance(h, (int, np.integer)) and h > 0 for h in hidden)
    ):
        raise AuditError(f"model hidden_layers must be a non-empty list of positive integers, got {hidden!r}")
    out["hidden_layers"] = [int(h) for h in hidden]
    if out["activation"] not in ACTIVATIONS:
        raise AuditError(f"unknown activation '{out['activation']}'; known: {sorted(ACTIVATIONS)}")
    d = float(out["dropout"])
    if not 0.0 <= d < 1.0:
        raise AuditError(f"model dropout must be in [0, 1), got {d}")
    out["dropout"] = d
    return out


def build_model(
    spec: dict | None,
    n_features: int,
    mean=None,
    std=None,
    generator: torch.Generator | None = None,
) -> MLP:
    """Build a model from a spec dict (keys ``architecture``, ``hidden_layers``,
    ``activation``, ``dropout``; missing keys come from the architecture's defaults).

    ``mean`` / ``std`` (length ``n_features``, physical units) set the standardisation
    layer; without them it is the identity. Weights are Glorot-initialised from
    ``generator`` (or the global torch RNG).
    """
    spec = resolve_spec(spec)
    if int(n_features) < 1:
        raise AuditError(f"a model needs at least one input feature, got {n_features}")
    mean_t = None if mean is None else torch.as_tensor(np.asarray(mean, dtype=np.float32))
    std_t = None if std is None else torch.as_tensor(np.asarray(std, dtype=np.float32))
    for name, t in (("mean", mean_t), ("std", std_t)):
        if t is not None and tuple(t.shape) != (int(n_features),):
            raise AuditError(
                f"standardisation {name} has shape {tuple(t.shape)}, expected ({int(n_features)},): "
                "one value per feature"
            )
    if std_t is not None and not bool(torch.all(std_t > 0)):
        raise AuditError("standardisation std must be positive for every feature")
    model = MLP(n_features, spec["hidden_layers"], spec["activation"], spec["dropout"], mean_t, std_t)
    model.reset_parameters(generator)
    return model


def standardisation_from_data(X: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted per-feature mean and standard deviation (float32) for the input layer.

    |w| is used so that negative Monte-Carlo weights cannot produce a negative variance.
    A feature with zero spread gets std = 1 (it is then only shifted).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) == 0:
        raise AuditError("standardisation needs a non-empty (N, F) feature matrix")
    a = np.ones(len(X)) if w is None else np.abs(np.asarray(w, dtype=np.float64))
    if a.sum() <= 0:
        a = np.ones(len(X))
    mean = np.average(X, axis=0, weights=a)
    var = np.average((X - mean) ** 2, axis=0, weights=a)
    std = np.sqrt(var)
    std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)
