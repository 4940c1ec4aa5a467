"""Training of the analysis classifier, with the systematics-aware penalty of Wunsch, Joerger,
Wolf, Quast (2020), "Reducing the dependence of the neural network function to systematic
uncertainties in the input space" (arXiv:1907.11674).

Loss: L = L_BCE + sum_s lambda_s * Lambda_s, L_BCE the weighted binary cross-entropy (with
class balancing: signal and background carry equal total weight), Lambda_s the
differentiable-histogram penalty of ``hsaudit.ml.penalty`` evaluated per minibatch on the
events of the class(es) the systematic acts on. Adam, minibatches, early stopping on the
validation loss, deterministic for a seed on CPU.

Data interface (numpy in)
-------------------------
``X`` (N, F) float32 nominal features in physical units, ``y`` (N,) 0/1, ``w`` (N,) event
weights, ``event_id`` (N,) integers or a structured run/luminosityBlock/event array, and
``systematics`` a dict ``name -> {"up": X_up, "down": X_down, "w_up": w_up, "w_down": w_down}``
(any entry may be None or missing). Shifted features are event-matched rows of X. An event
that migrates out of the selection in a variant is expressed by a zero weight in that
variant (its shifted features may then be NaN).

The train/validation/test split is a deterministic hash of the event id
(``split_by_event_id``), so all variants of one event land in the same split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hsaudit.config_schema import ModelSettings, TrainingSection
from hsaudit.errors import AuditError
from hsaudit.hashing import splitmix64
from hsaudit.ml.models import MLP, build_model, resolve_spec, standardisation_from_data
from hsaudit.ml.penalty import DEFAULT_EPS_REL, relative_deviation, soft_histogram

TRAIN, VALIDATION, TEST = 0, 1, 2
VARIATION_KEYS = ("up", "down", "w_up", "w_down")
PENALTY_CLASSES = {"background": (0,), "signal": (1,), "all": (0, 1)}
# the defaults of the configuration's ``training`` section (hsaudit.config_schema owns them)
_DEFAULT = {k: f.get_default(call_default_factory=True) for k, f in TrainingSection.model_fields.items()}


# ---------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------
@dataclass
class TrainingSettings:
    """Everything that defines one trained model. Build from a plain dict with ``from_dict``."""

    architecture: str = ModelSettings.model_fields["architecture"].default
    hidden_layers: list[int] | None = None  # None: the architecture's default
    activation: str | None = None  # None: the architecture's default
    dropout: float = 0.0
    learning_rate: float = _DEFAULT["learning_rate"]
    weight_decay: float = _DEFAULT["weight_decay"]
    batch_size: int = _DEFAULT["batch_size"]
    max_epochs: int = _DEFAULT["max_epochs"]
    patience: int = _DEFAULT["patience"]
    min_delta: float = _DEFAULT["min_delta"]
    seed: int = _DEFAULT["seed"]
    lambdas: dict[str, float] = field(default_factory=dict)  # systematic -> lambda_s
    n_bins: int = _DEFAULT["penalty_bins"]  # bins of the penalty histograms
    # Ramp the lambdas linearly from 0 (epoch 1) to their full value (epoch warmup + 1);
    # early stopping only starts once the penalty is at full strength.
    # Default 3: started at full strength from a random init, lambda = 20 sometimes drives
    # the toy of Wunsch et al. into a saturated, useless network (AUC 0.50 for one of
    # three seeds); a short ramp first lets the classifier form.
    penalty_warmup_epochs: int = _DEFAULT["penalty_warmup_epochs"]
    penalty_on: str = _DEFAULT["penalty_on"]  # whose events enter the penalty histograms
    class_balance: bool = _DEFAULT["class_balance"]
    device: str = _DEFAULT["device"]
    split_fractions: tuple[float, ...] = tuple(_DEFAULT["split"].model_dump().values())  # train, validation, test
    split_salt: str = _DEFAULT["split_salt"]
    progress: bool = _DEFAULT["progress"]

    # spellings used in the analysis configuration files
    ALIASES = {
        "lr": "learning_rate",
        "hidden": "hidden_layers",
        "epochs": "max_epochs",
        "penalty": "lambdas",
        "penalty_bins": "n_bins",
        "split": "split_fractions",
    }

    @classmethod
    def from_dict(cls, data: dict | None) -> "TrainingSettings":
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            key = cls.ALIASES.get(key, key)
            if key not in names:
                raise AuditError(f"unknown training setting '{key}'; known: {sorted(names)}")
            if key in kwargs:
                raise AuditError(f"training setting '{key}' is given twice (under two spellings)")
            if key == "split_fractions" and isinstance(value, dict):
                extra = set(value) - {"train", "validation", "test"}
                if extra or "train" not in value or "validation" not in value:
                    raise AuditError(f"split must have keys train, validation (and test), got {sorted(value)}")
                value = (value["train"], value["validation"], value.get("test", 0.0))
            if key in ("lambdas",) and value is None:
                value = {}
            kwargs[key] = value
        s = cls(**kwargs)
        s.validate()
        return s

    def __post_init__(self):
        self.split_fractions = tuple(self.split_fractions)
        if self.hidden_layers is not None and isinstance(self.hidden_layers, (list, tuple)):
            self.hidden_layers = list(self.hidden_layers)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["split_fractions"] = list(self.split_fractions)
        return d

    def model_spec(self) -> dict:
        return resolve_spec(
            {
                "architecture": self.architecture,
                "hidden_layers": self.hidden_layers,
                "activation": self.activation,
                "dropout": self.dropout,
            }
        )

    def validate(self) -> None:
        self.model_spec()

        def positive(name, integer=True, allow_zero=False):
            v = getattr(self, name)
            ok = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.number))
            if isinstance(v, bool) or not ok or not (v >= 0 if allow_zero else v > 0) or not math.isfinite(v):
                kind = "integer" if integer else "number"
                raise AuditError(f"training setting '{name}' must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {v!r}")

        for n in ("batch_size", "max_epochs", "n_bins"):
            positive(n)
        positive("patience", allow_zero=False)
        positive("learning_rate", integer=False)
        positive("weight_decay", integer=False, allow_zero=True)
        positive("min_delta", integer=False, allow_zero=True)
        positive("penalty_warmup_epochs", allow_zero=True)
        if any(v > 0 for v in self.lambdas.values()) and self.penalty_warmup_epochs >= self.max_epochs:
            raise AuditError(
                f"penalty_warmup_epochs ({self.penalty_warmup_epochs}) must be smaller than max_epochs ({self.max_epochs})"
            )
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise AuditError(f"training setting 'seed' must be an integer, got {self.seed!r}")
        if not isinstance(self.lambdas, dict):
            raise AuditError("training setting 'lambdas' must map systematic names to numbers")
        for k, v in self.lambdas.items():
            if not isinstance(v, (int, float, np.number)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise AuditError(f"lambda for systematic '{k}' must be a non-negative number, got {v!r}")
        if self.penalty_on not in PENALTY_CLASSES:
            raise AuditError(f"training setting 'penalty_on' must be one of {sorted(PENALTY_CLASSES)}, got {self.penalty_on!r}")
        if self.device != "auto" and not str(self.device).startswith(("cpu", "cuda")):
            raise AuditError(f"training setting 'device' must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        _check_fractions(self.split_fractions)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise AuditError(f"device '{name}' was requested but no CUDA GPU is available; use device 'auto' or 'cpu'")
    return torch.device(name)


# ---------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------
def _check_fractions(fractions) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) < 1 or np.any(~np.isfinite(f)) or np.any(f < 0) or abs(f.sum() - 1) > 1e-6:
        raise AuditError(f"split fractions must be non-negative numbers summing to 1, got {list(fractions)}")
    return f


def _as_uint64(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "u":
        return a.astype(np.uint64)
    if a.dtype.kind in "ib":
        return np.ascontiguousarray(a.astype(np.int64)).view(np.uint64)
    raise AuditError(f"{what} must be integers, got dtype {a.dtype}")


def hash_event_ids(ids, salt: str = "audit-split") -> np.ndarray:
    """Deterministic uint64 hash of event ids (integers, or a structured array whose fields,
    e.g. run / luminosityBlock / event, are all hashed)."""
    ids = np.asarray(ids)
    seed = int.from_bytes(hashlib.blake2b(str(salt).encode(), digest_size=8).digest(), "little")
    h = np.full(ids.shape[0] if ids.ndim else 1, seed, dtype=np.uint64)
    if ids.dtype.names:
        parts = [_as_uint64(ids[n], f"event id field '{n}'") for n in ids.dtype.names]
    elif ids.ndim == 2:  # (N, k) integer columns, e.g. run, lumi, event
        parts = [_as_uint64(ids[:, j], "event ids") for j in range(ids.shape[1])]
    elif ids.ndim == 1:
        parts = [_as_uint64(ids, "event ids")]
    else:
        raise AuditError(f"event ids must be a 1-d array or a structured run/lumi/event array, got shape {ids.shape}")
    for p in parts:
        h = splitmix64(h ^ p)
    return h


def split_by_event_id(ids, fractions=(0.6, 0.2, 0.2), salt: str = "audit-split") -> np.ndarray:
    """Assign every event to a split by a hash of its id: returns int8 labels
    0 .. len(fractions)-1 (for the default: TRAIN=0, VALIDATION=1, TEST=2).

    The same id always gets the same label (independently of the other events and their
    order), so the nominal and shifted variants of one event never end up in different
    splits; a different ``salt`` gives an independent split.
    """
    f = _check_fractions(fractions)
    h = hash_event_ids(ids, salt)
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)  # uniform in [0, 1)
    edges = np.cumsum(f)[:-1]
    return np.searchsorted(edges, u, side="right").astype(np.int8)


# ---------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------
def _describe_bad_rows(bad_rows: np.ndarray, X: np.ndarray, features) -> str:
    i = int(np.flatnonzero(bad_rows)[0])
    j = int(np.flatnonzero(~np.isfinite(X[i]))[0])
    name = features[j] if features is not None else f"column {j}"
    return f"{int(bad_rows.sum())} events (first: row {i}, feature '{name}' = {X[i, j]})"


def check_inputs(X, y, w, event_id, features=None):
    """Validate the nominal arrays; returns (X float32, y float32, w float64)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise AuditError(f"features must be a 2-d (events, features) array, got shape {X.shape}")
    n, nf = X.shape
    if n == 0:
        raise AuditError("the training set is empty: no events passed the selection / were given")
    if features is not None and len(features) != nf:
        raise AuditError(
            f"feature list mismatch: {len(features)} feature names {list(features)} for a matrix with {nf} columns"
        )
    if X.dtype.kind not in "fiu":
        raise AuditError(f"features must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float32, copy=False)
    y = np.asarray(y)
    if y.shape != (n,):
        raise AuditError(f"labels have shape {y.shape}, expected ({n},)")
    if not np.isin(y, (0, 1)).all():
        raise AuditError("labels must be 0 (background) or 1 (signal)")
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    if w.shape != (n,):
        raise AuditError(f"weights have shape {w.shape}, expected ({n},)")
    if not np.isfinite(w).all():
        raise AuditError(f"weights contain NaN or inf in {int((~np.isfinite(w)).sum())} events")
    if np.asarray(event_id).shape[:1] != (n,):
        raise AuditError(f"event ids have length {np.asarray(event_id).shape[:1]}, expected {n}")
    bad = ~np.isfinite(X).all(axis=1)
    if (bad & (w != 0)).any():
        raise AuditError(f"features contain NaN or inf in {_describe_bad_rows(bad & (w != 0), X, features)}; "
                         "fix or drop them")
    if bad.any():
        # events absent in the nominal variant (selected only in a shifted one, for the penalty)
        # carry nominal weight 0: their nominal row never enters a loss, so any finite value does
        X = np.where(bad[:, None], np.float32(0.0), X)
    return X, y.astype(np.float32), w


def check_systematics(systematics, X, w, features=None) -> dict:
    """Validate the variations; returns name -> {key: array or None} with NaN rows of
    migrated-out events (zero variant weight) replaced by the nominal row."""
    out = {}
    n, nf = X.shape
    for name, var in (systematics or {}).items():
        if not isinstance(var, dict):
            raise AuditError(f"systematic '{name}' must be a dict with keys {VARIATION_KEYS}")
        unknown = set(var) - set(VARIATION_KEYS)
        if unknown:
            raise AuditError(f"systematic '{name}' has unknown keys {sorted(unknown)}; known: {VARIATION_KEYS}")
        clean = {k: None for k in VARIATION_KEYS}
        for side in ("up", "down"):
            wk = f"w_{side}"
            wv = var.get(wk)
            if wv is not None:
                wv = np.asarray(wv, dtype=np.float64)
                if wv.shape != (n,):
                    raise AuditError(f"systematic '{name}' {wk} has shape {wv.shape}, expected ({n},)")
                if not np.isfinite(wv).all():
                    raise AuditError(f"systematic '{name}' {wk} contains NaN or inf")
                clean[wk] = wv
            xv = var.get(side)
            if xv is not None:
                xv = np.asarray(xv)
                if xv.shape != (n, nf):
                    raise AuditError(
                        f"systematic '{name}' {side} features have shape {xv.shape}, expected {(n, nf)} "
                        "(event-matched rows of the nominal features)"
                    )
                xv = xv.astype(np.float32, copy=True)
                bad = ~np.isfinite(xv).all(axis=1)
                if bad.any():
                    present = (wv if wv is not None else w) != 0
                    if (bad & present).any():
                        raise AuditError(
                            f"systematic '{name}' {side} features contain NaN or inf in "
                            f"{_describe_bad_rows(bad & present, xv, features)} with non-zero weight; "
                            f"events absent in a variant need weight 0 in '{wk}'"
                        )
                    xv[bad] = X[bad]
                clean[side] = xv
        if all(v is None for v in clean.values()):
            raise AuditError(f"systematic '{name}' has neither shifted features nor weights")
        out[name] = clean
    return out


# ---------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------
@dataclass
class TrainingResult:
    model: MLP  # on CPU, eval mode, best validation epoch restored
    spec: dict  # resolved model spec (for build_model / modelio)
    settings: TrainingSettings
    history: list[dict]  # one dict of metrics per epoch
    split: np.ndarray  # int8 label per event (TRAIN / VALIDATION / TEST)
    best_epoch: int
    stopped_early: bool
    device: str
    features: list[str] | None = None
    class_weight_factors: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-friendly description (no arrays, no model)."""
        best = next(h for h in self.history if h["epoch"] == self.best_epoch)
        return {
            "spec": self.spec,
            "settings": self.settings.to_dict(),
            "features": self.features,
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            "device": self.device,
            "best": best,
            "split_counts": {str(k): int((self.split == k).sum()) for k in np.unique(self.split)},
            "class_weight_factors": self.class_weight_factors,
        }


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
class _Variations:
    """Penalty variations of one split, as device tensors, vectorised over variants.

    Only the events of the penalty class(es) enter the penalty histograms, so only they are
    stored here ("penalty rows"): ``rows`` are their indices in the split, ``pen_pos`` maps a
    split index to its penalty row (-1: not a penalty event). Rows of ``w`` (1+V, P):
    0 = nominal penalty weights, then one row per variant (systematic x side). ``shifted``
    (n_shift, P, F) holds shifted features; ``source`` maps each row of ``w`` to the row of the
    output matrix [nominal outputs, shifted outputs...] it histograms.
    """

    def __init__(self, names, systematics, sel, w_bal, pen_mask, class_factor, y, device):
        rows = np.flatnonzero(pen_mask)
        pen_pos = np.full(len(pen_mask), -1, dtype=np.int64)
        pen_pos[rows] = np.arange(len(rows))
        fac = class_factor[y.astype(int)][rows]
        shifted, source, wrows, syst_index = [], [0], [w_bal[rows]], []
        for s, name in enumerate(names):
            v = systematics[name]
            for side in ("up", "down"):
                xv, wv = v[side], v[f"w_{side}"]
                if xv is None and wv is None:
                    continue
                if xv is not None:
                    shifted.append(xv[sel][rows])
                    source.append(len(shifted))
                else:
                    source.append(0)
                wrows.append(w_bal[rows] if wv is None else wv[sel][rows] * fac)
                syst_index.append(s)
        self.n_syst = len(names)
        self.n_shift = len(shifted)
        self.n_rows = len(rows)
        self.all_rows = len(rows) == len(pen_mask)
        self.rows = torch.from_numpy(rows).to(device)
        self.pen_pos = torch.from_numpy(pen_pos).to(device)
        self.shifted = torch.from_numpy(np.stack(shifted)).to(device) if shifted else None
        self.source = torch.tensor(source, device=device)
        self.w = torch.from_numpy(np.stack(wrows).astype(np.float32)).to(device)  # (1+V, P)
        self.syst_index = torch.tensor(syst_index, dtype=torch.long, device=device)  # (V,)

    def per_systematic(self, per_variant: torch.Tensor) -> torch.Tensor:
        """Sum the per-variant deviations (V,) into one Lambda per systematic (S,)."""
        out = per_variant.new_zeros(self.n_syst)
        return out.index_add(0, self.syst_index, per_variant)


def _adam(model, lr, weight_decay):
    """Adam; the fused implementation (one kernel for all parameters) where this torch
    build has it for the device, else the default one."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def _bce_sum(logits, target, weight):
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")


def train_classifier(
    X,
    y,
    w,
    event_id,
    settings: TrainingSettings | dict | None = None,
    systematics: dict | None = None,
    features: list[str] | None = None,
    split: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train a classifier; see the module docstring for the data interface.

    ``split``: optional precomputed int labels (TRAIN/VALIDATION/TEST); by default
    ``split_by_event_id(event_id, settings.split_fractions, settings.split_salt)``.
    ``log``: where the per-epoch progress line goes (default: stderr; nothing when
    ``settings.progress`` is False).
    Returns a ``TrainingResult`` whose ``history`` holds per-epoch metrics: train/validation
    loss, BCE, Lambda per systematic, validation AUC, time, events/s.
    """
    s = settings if isinstance(settings, TrainingSettings) else TrainingSettings.from_dict(settings)
    s.validate()
    spec = s.model_spec()
    X, y, w = check_inputs(X, y, w, event_id, features)
    systs = check_systematics(systematics, X, w, features)
    missing = sorted(set(s.lambdas) - set(systs))
    if missing:
        raise AuditError(f"lambdas given for systematics {missing} that have no variations; known: {sorted(systs)}")
    device = resolve_device(s.device)
    if log is None:
        log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if s.progress else (lambda msg: None)

    # -- split and class balancing -----------------------------------------------------
    if split is None:
        split = split_by_event_id(event_id, s.split_fractions, s.split_salt)
    split = np.asarray(split)
    if split.shape != (len(X),):
        raise AuditError(f"split labels have shape {split.shape}, expected ({len(X)},)")
    tr, va = split == TRAIN, split == VALIDATION
    if not tr.any():
        raise AuditError("the training set is empty after the train/validation/test split; add events or raise the training fraction")
    if not va.any():
        raise AuditError("the validation set is empty (needed for early stopping); add events or raise the validation fraction")
    class_factor = np.ones(2)
    for c in (0, 1):
        tot = w[tr & (y == c)].sum()
        if not (y[tr] == c).any():
            raise AuditError(f"the training set has no {'signal' if c else 'background'} events")
        if tot <= 0:
            raise AuditError(f"the total {'signal' if c else 'background'} training weight is {tot:.3g}; it must be positive")
        class_factor[c] = (0.5 * tr.sum() / tot) if s.class_balance else 1.0
    if not s.class_balance:
        class_factor[:] = tr.sum() / w[tr].sum()  # mean training weight 1: comparable loss scale
    w_bal = w * class_factor[y.astype(int)]
    pen_mask = np.isin(y, PENALTY_CLASSES[s.penalty_on]).astype(np.float64)

    # Systematics with lambda > 0 enter the training loss; all of them are monitored on the
    # validation set so that the variation of the output is visible at lambda = 0 too.
    pen_names = [n for n in systs if s.lambdas.get(n, 0.0) > 0]
    mon_names = list(systs)

    def tensors(sel, names):
        return (
            torch.from_numpy(np.ascontiguousarray(X[sel])).to(device),
            torch.from_numpy(y[sel]).to(device),
            torch.from_numpy(w_bal[sel].astype(np.float32)).to(device),
            _Variations(names, systs, sel, w_bal[sel], pen_mask[sel], class_factor, y[sel], device),
        )

    Xtr, ytr, wtr, vtr = tensors(tr, pen_names)
    Xva, yva, wva, vva = tensors(va, mon_names)
    lam_train = torch.tensor([float(s.lambdas[n]) for n in pen_names], device=device)
    lam_val = torch.tensor([float(s.lambdas.get(n, 0.0)) for n in mon_names])  # CPU, like val Lambdas
    n_train, n_val = int(tr.sum()), int(va.sum())

    # -- model, optimiser, RNG -----------------------------------------------------------
    mean, std = standardisation_from_data(X[tr], w[tr])
    init_gen = torch.Generator().manual_seed(int(s.seed))
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(int(s.seed))  # dropout masks
        model = build_model(spec, X.shape[1], mean, std, generator=init_gen).to(device)
        shuffle_gen = torch.Generator(device=device).manual_seed(int(s.seed) + 1)
        opt = _adam(model, s.learning_rate, s.weight_decay)

        history: list[dict] = []
        best_loss, best_epoch, best_state, wait = math.inf, 0, None, 0
        stopped_early = False
        K, B = int(s.n_bins), int(s.batch_size)
        for epoch in range(1, int(s.max_epochs) + 1):
            warm = s.penalty_warmup_epochs if pen_names else 0
            ramp = min(1.0, (epoch - 1) / warm) if warm > 0 else 1.0
            t0 = time.perf_counter()
            train_bce, train_pen = _train_epoch(model, opt, Xtr, ytr, wtr, vtr, lam_train * ramp, K, B, shuffle_gen)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t1 = time.perf_counter()
            val = _evaluate_split(model, Xva, yva, wva, vva, K)
            t2 = time.perf_counter()

            train_bce = train_bce / n_train
            train_lam = {n: float(v) / n_train for n, v in zip(pen_names, train_pen.tolist())}
            train_loss = train_bce + ramp * sum(s.lambdas[n] * v for n, v in train_lam.items())
            val_lam = dict(zip(mon_names, val["lambda"].tolist()))
            val_loss = val["bce"] + float((lam_val * val["lambda"]).sum()) if mon_names else val["bce"]
            # val_loss always uses the full lambdas, so it is comparable across epochs
            improved = ramp == 1.0 and val_loss < best_loss - s.min_delta
            rec = {
                "epoch": epoch,
                "train_loss": float(train_loss),
                "train_bce": float(train_bce),
                "train_lambda": train_lam,
                "val_loss": float(val_loss),
                "val_bce": float(val["bce"]),
                "val_lambda": {k: float(v) for k, v in val_lam.items()},
                "val_auc": float(val["auc"]),
                "train_seconds": t1 - t0,
                "val_seconds": t2 - t1,
                "train_events_per_s": n_train / max(t1 - t0, 1e-12),
                "penalty_scale": ramp,
                "improved": bool(improved),
            }
            history.append(rec)
            if improved:
                best_loss, best_epoch, wait = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif ramp == 1.0:
                wait += 1
            log(_progress_line(rec, s.max_epochs))
            if wait >= s.patience:
                stopped_early = True
                break

    model.load_state_dict(best_state)
    model = model.to("cpu").eval()
    log(f"best epoch {best_epoch}: val_loss {best_loss:.5f}" + (" (early stop)" if stopped_early else ""))
    return TrainingResult(
        model=model,
        spec=spec,
        settings=s,
        history=history,
        split=split.astype(np.int8),
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        device=str(device),
        features=list(features) if features is not None else None,
        class_weight_factors={"background": float(class_factor[0]), "signal": float(class_factor[1])},
    )


def _train_epoch(model, opt, Xtr, ytr, wtr, var: _Variations, lam, n_bins, batch_size, gen):
    """One pass over the training set. Returns (sum of weighted BCE, per-systematic sum of
    batch Lambdas weighted by batch size); no host sync inside the loop on CPU (on CUDA one
    small one per batch, for the number of penalty events in it)."""
    model.train()
    n, nf = Xtr.shape
    perm = torch.randperm(n, generator=gen, device=Xtr.device)
    # shuffle once per epoch (one large gather); batches are then contiguous views
    Xp, yp, wp = Xtr[perm], ytr[perm], wtr[perm]
    pos_p = None if var.all_rows else var.pen_pos[perm]
    bce_sum = torch.zeros((), device=Xtr.device)
    pen_sum = torch.zeros(var.n_syst, device=Xtr.device)
    use_pen = var.n_syst > 0 and var.n_rows > 0
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        b = end - start
        xb, yb, wb = Xp[start:end], yp[start:end], wp[start:end]
        if use_pen:
            if var.all_rows:
                at, prow = None, perm[start:end]
            else:
                # positions in the batch of the penalty-class events, and their penalty rows
                pos = pos_p[start:end]
                at = (pos >= 0).nonzero().squeeze(1)
                prow = pos[at]
            p = prow.shape[0]
            if var.n_shift:
                # nominal batch and the shifted penalty rows in one forward pass
                xs = var.shifted[:, prow].reshape(-1, nf)
                logits_all = model.logits(torch.cat([xb, xs]))
                logits = logits_all[:b]
                f_shift = torch.sigmoid(logits_all[b:]).view(var.n_shift, p)
            else:
                logits = model.logits(xb)
            f_nom = torch.sigmoid(logits if at is None else logits[at])
            f_all = torch.cat([f_nom.unsqueeze(0), f_shift]) if var.n_shift else f_nom.unsqueeze(0)
            h = soft_histogram(f_all[var.source], var.w[:, prow], n_bins)  # (1+V, K)
            lam_s = var.per_systematic(relative_deviation(h[0], h[1:]))
            bce = _bce_sum(logits, yb, wb)
            loss = bce / b + (lam * lam_s).sum()
            pen_sum += lam_s.detach() * b
        else:
            bce = _bce_sum(model.logits(xb), yb, wb)
            loss = bce / b
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bce_sum += bce.detach()
    return float(bce_sum), pen_sum


@torch.no_grad()
def _evaluate_split(model, X, y, w, var: _Variations, n_bins, chunk: int = 65536) -> dict:
    """Weighted BCE, Lambda per systematic (histograms over the whole split) and AUC."""
    from hsaudit.roc import weighted_auc

    model.eval()
    n, nf = X.shape
    bce = torch.zeros((), device=X.device)
    scores = torch.empty(n, device=X.device)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        logits = model.logits(X[sl])
        bce += _bce_sum(logits, y[sl], w[sl])
        scores[sl] = torch.sigmoid(logits)
    lam = torch.zeros(var.n_syst)
    if var.n_syst and var.n_rows:
        hist = torch.zeros(var.w.shape[0], n_bins, device=X.device)
        f_pen = scores[var.rows]
        for start in range(0, var.n_rows, chunk):
            sl = slice(start, start + chunk)
            rows = [f_pen[sl]]
            if var.n_shift:
                p = rows[0].shape[0]
                rows += list(model(var.shifted[:, sl].reshape(-1, nf)).view(var.n_shift, p))
            hist += soft_histogram(torch.stack(rows)[var.source], var.w[:, sl], n_bins)
        lam = var.per_systematic(relative_deviation(hist[0], hist[1:])).cpu()
    return {
        "bce": float(bce) / float(w.sum()),
        "lambda": lam,
        "auc": weighted_auc(scores.cpu().numpy(), y.cpu().numpy(), w.cpu().numpy()),
    }


def _progress_line(rec: dict, max_epochs: int) -> str:
    lam = " ".join(f"{k}={v:.3g}" for k, v in rec["val_lambda"].items())
    return (
        f"epoch {rec['epoch']:>3d}/{max_epochs} train {rec['train_loss']:.4f} "
        f"val {rec['val_loss']:.4f} (bce {rec['val_bce']:.4f}{' Lambda ' + lam if lam else ''}) "
        f"auc {rec['val_auc']:.4f} {rec['train_events_per_s'] / 1e3:.0f}k ev/s "
        f"{rec['train_seconds'] + rec['val_seconds']:.1f}s{' *' if rec['improved'] else ''}"
    )
