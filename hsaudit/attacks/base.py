"""One interface for all attacks on the classifier inside a systematic's envelope.

An attack takes (model, events x, envelope, objective, labels, weights, seed, settings) and
returns an ``AttackResult`` with the perturbed events ``x_adv`` and extra information
(docs/audit.md "Attack"). Every attack

* runs batched on the device the model is on (chunks of ``batch_size`` events);
* is deterministic for a seed: random numbers are counter-based, derived from the seed and a
  key of each event (by default a hash of its nominal features, or ``event_keys`` such as the
  event number), so a batch attacked at once equals its events attacked one by one and a
  subset gets the same perturbation as in the full sample;
* never modifies its inputs, and returns x exactly for events it does not attack (and for a
  zero-size envelope);
* keeps every event inside its envelope box (and integer features integer).

Objectives (per event, on the model's logit z = log(f / (1 - f))):

``signal_as_background``  attack signal events (label 1), push z down;
``background_as_signal``  attack background events (label 0), push z up;
``shift_output``          attack every event (optionally only ``mask``) and push z in
                          ``direction`` (+1: towards signal): the maximal shift of the NN
                          output distribution.

Which events move and which events the objective is about are separate: ``mask`` says who
may move (the audit passes every selected event: a mismodelling is a property of the
simulation, not of a region); ``objective_mask`` says whose objective counts (the audit
passes the signal-region candidates). Event-wise attacks optimise each event's own
objective, which does not depend on the event's region, so they move every event in
``mask``; universal attacks (one learned mapping, ``universal = True``) are fitted on the
objective's events and applied to every event in ``mask``.

Model interface: any ``torch.nn.Module`` mapping (N, F) float32 features in physical units to
(N,) probabilities in [0, 1]; if it has a ``logits`` method (``hsaudit.ml.models.MLP``), that
is used for numerically stable gradients.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import ValidationError

from hsaudit.config_schema import ATTACK_SETTINGS, ENTRY_KEYS, AttackSettingsBase, attack_defaults, explain, known_keys
from hsaudit.errors import AuditError
from hsaudit.hashing import MIX_1, MIX_2, splitmix64
from hsaudit.attacks.envelope import Envelope, project_box

OBJECTIVES = ("signal_as_background", "background_as_signal", "shift_output")

# the settings every attack has, with their defaults (hsaudit.config_schema owns all defaults)
COMMON_DEFAULTS = {k: f.default for k, f in AttackSettingsBase.model_fields.items() if k not in ENTRY_KEYS}


# ---------------------------------------------------------------------------- results
@dataclass
class AttackResult:
    """``x_adv``: (N, F) float32 tensor on the input's device (numpy input -> CPU tensor);
    ``attacked``: (N,) bool, events the attack was allowed to move; ``info``: settings, seed,
    objective, timing and attack-specific numbers (JSON-serialisable); ``extra``: tensors and
    objects (e.g. per-event theta, the adversarial network's state dict)."""

    x_adv: torch.Tensor
    attacked: torch.Tensor
    info: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def numpy(self) -> np.ndarray:
        return self.x_adv.detach().cpu().numpy()


# ---------------------------------------------------------------------------- randomness
def event_keys_from_features(x) -> np.ndarray:
    """(N,) uint64 key per event: a hash of its float32 feature bit patterns."""
    a = np.ascontiguousarray(torch.as_tensor(x).detach().cpu().numpy().astype(np.float32))
    bits = a.view(np.uint32).astype(np.uint64)
    h = np.zeros(a.shape[0], dtype=np.uint64)
    for j in range(a.shape[1]):
        h = splitmix64(h ^ bits[:, j])
    return h


def counter_uniform(keys: np.ndarray, seed: int, stream: int, n_features: int) -> np.ndarray:
    """(N, n_features) float32 uniforms in [0, 1), a pure function of (key, seed, stream, feature)."""
    with np.errstate(over="ignore"):
        base = splitmix64(np.asarray(keys, dtype=np.uint64) ^ splitmix64(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
                                                                       + np.uint64(int(stream)) * MIX_1))
        z = splitmix64(base[:, None] + (np.arange(n_features, dtype=np.uint64)[None, :] + np.uint64(1)) * MIX_2)
    return ((z >> np.uint64(40)).astype(np.float32) / np.float32(2 ** 24)).astype(np.float32)


# ---------------------------------------------------------------------------- model helpers
def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def model_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N,) logits: ``model.logits`` when the model has it, else log(p / (1 - p))."""
    fn = getattr(model, "logits", None)
    if callable(fn):
        z = fn(x)
    else:
        p = model(x)
        p = p.reshape(p.shape[0], -1)[:, 0] if p.ndim > 1 else p
        p = p.clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p)
    return z.reshape(z.shape[0], -1)[:, 0] if z.ndim > 1 else z


def model_probabilities(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    """(N,) probabilities in batches, no gradient, on the input's device."""
    dev = model_device(model)
    out = []
    with torch.no_grad(), frozen(model):
        for i in range(0, x.shape[0], batch_size):
            out.append(torch.sigmoid(model_logits(model, x[i:i + batch_size].to(dev))).to(x.device))
    return torch.cat(out) if out else torch.zeros(0, device=x.device)


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """Eval mode and no parameter gradients for the duration (restored afterwards): attacks
    differentiate with respect to the inputs only, which also makes the backward pass cheaper."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


# ---------------------------------------------------------------------------- context
@dataclass
class AttackContext:
    """Everything an attack algorithm needs, on the model's device (rows = attacked events
    for per-event attacks, all events for population attacks)."""

    model: torch.nn.Module
    device: torch.device
    x: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    integer: torch.Tensor
    nominal: torch.Tensor
    up_shift: torch.Tensor
    down_shift: torch.Tensor
    sign: torch.Tensor  # (N,) +1: push the logit up, -1: push it down
    attacked: torch.Tensor  # (N,) bool: events that may move
    target: torch.Tensor  # (N,) bool: events the objective is about (== attacked unless universal)
    labels: torch.Tensor | None
    weights: torch.Tensor
    keys: np.ndarray | None  # None: hashed from ``key_features`` when first needed
    seed: int
    objective: str
    envelope: Envelope
    feature_names: list[str] | None
    # optional judge of a whole result: callable(x_adv (N, F) numpy) -> True when the
    # audit's checks would call it hidden (used by population attacks that support it)
    monitor: object = None
    # (N, F) CPU features whose row hashes are the keys when ``keys`` is None (most attacks
    # draw no random numbers, so the hash is only computed for those that do)
    key_features: torch.Tensor | None = None

    def rows(self, idx: torch.Tensor) -> "AttackContext":
        idx_cpu = idx.cpu()
        idx = idx.to(self.device)
        return AttackContext(
            self.model, self.device, self.x[idx], self.lower[idx], self.upper[idx], self.integer,
            self.nominal[idx], self.up_shift[idx], self.down_shift[idx], self.sign[idx], self.attacked[idx],
            self.target[idx],
            None if self.labels is None else self.labels[idx], self.weights[idx],
            None if self.keys is None else self.keys[idx_cpu.numpy()],
            self.seed, self.objective, self.envelope, self.feature_names,
            key_features=None if self.key_features is None else self.key_features[idx_cpu],
        )

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return project_box(x, self.lower, self.upper, self.integer)

    def objective_values(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) per-event objective to maximise: sign * logit."""
        return self.sign * model_logits(self.model, x)

    def uniform(self, stream: int) -> torch.Tensor:
        if self.keys is None:  # a row-wise hash: the same keys as hashing all events and taking rows
            self.keys = event_keys_from_features(self.key_features)
        return torch.from_numpy(counter_uniform(self.keys, self.seed, stream, self.x.shape[1])).to(self.device)


def straight_through(ctx: AttackContext, x: torch.Tensor) -> torch.Tensor:
    """Projected value in the forward pass, identity gradient (so rounding of integer features
    does not kill the gradient of the continuous relaxation)."""
    return x + (ctx.project(x) - x).detach()


# ---------------------------------------------------------------------------- settings helpers
def check_int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise AuditError(f"attack setting '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value, minimum: float = 0.0, maximum: float = float("inf"), open_min: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AuditError(f"attack setting '{name}' must be a number, got {value!r}") from None
    if isinstance(value, bool) or not np.isfinite(v) or v < minimum or v > maximum or (open_min and v == minimum):
        lo = f"> {minimum}" if open_min else f">= {minimum}"
        hi = "" if maximum == float("inf") else f" and <= {maximum}"
        raise AuditError(f"attack setting '{name}' must be a finite number {lo}{hi}, got {value!r}")
    return v


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise AuditError(f"attack setting '{name}' must be true or false, got {value!r}")
    return bool(value)


def _plain(value):
    """numpy scalars and arrays, tuples -> plain Python values (the schema takes no numpy types)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _SchemaDefaults:
    """``Attack.defaults``: the attack type's own settings and defaults, read from the schema."""

    def __get__(self, obj, owner) -> dict:
        return attack_defaults(owner.name, common=False) if owner.name in ATTACK_SETTINGS else {}


# ---------------------------------------------------------------------------- the interface
class Attack:
    """Base class. Subclasses set ``name`` (a type of ``hsaudit.config_schema.ATTACK_SETTINGS``,
    whose model defines the settings, their defaults and ranges), ``per_event`` and implement
    ``run(ctx, settings) -> (x_adv_rows, info, extra)`` and, for what the schema cannot say,
    ``validate(settings) -> settings``.

    ``per_event = True``: the attack treats events independently; ``run`` gets chunks of the
    attacked events only. ``False`` (population attacks: adversarial network, CONSERVAttack):
    ``run`` gets all events once, with ``ctx.attacked`` marking who may move.
    """

    name = "base"
    per_event = True
    # universal = True: one mapping moves every event in ``mask`` (the adversarial network);
    # the objective's class and ``objective_mask`` only select which events the loss is about
    universal = False
    defaults = _SchemaDefaults()

    def __init__(self, **settings):
        self._given = dict(settings)  # unresolved, so per-call overrides resolve afresh
        self.settings = self.resolve(settings)

    def resolve(self, settings: dict) -> dict:
        """Defaults filled in and every setting checked against the attack's schema model."""
        model = ATTACK_SETTINGS.get(self.name)
        if model is None:  # an attack outside the schema: its own defaults and checks
            return self.validate({**COMMON_DEFAULTS, **settings})
        known = [k for k in known_keys(model) if k not in ENTRY_KEYS]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise AuditError(f"unknown settings {unknown} for attack '{self.name}'; known: {known}")
        try:
            typed = model.model_validate({"type": self.name, **_plain(settings)})
        except ValidationError as err:
            problem = explain(err, model)
            where = f"attack setting '{problem.path}'" if problem.path else f"settings of attack '{self.name}'"
            raise AuditError(f"{where}: {problem.message}") from None
        return self.validate(typed.model_dump(exclude=set(ENTRY_KEYS)))

    def validate(self, settings: dict) -> dict:
        return settings

    def run(self, ctx: AttackContext, settings: dict):
        raise NotImplementedError

    def is_trivial(self, settings: dict) -> bool:
        """True when the settings make the attack a no-op (e.g. eps = 0)."""
        return False

    # ------------------------------------------------------------------
    def attack(
        self,
        model: torch.nn.Module,
        x,
        envelope: Envelope,
        objective: str = "shift_output",
        labels=None,
        weights=None,
        seed: int = 0,
        mask=None,
        event_keys=None,
        objective_mask=None,
        monitor=None,
        **settings,
    ) -> AttackResult:
        """Attack events ``x`` (N, F) inside ``envelope``; see the module docstring.

        ``labels`` (N,) 1 = signal, 0 = background (needed by the two class objectives);
        ``weights`` (N,) event weights (population attacks and metrics); ``mask`` (N,) bool,
        events allowed to move (default all); ``objective_mask`` (N,) bool, the events whose
        objective a universal attack is fitted on (default ``mask``; event-wise attacks
        ignore it, their per-event objective holds for every event); ``event_keys`` (N,) integers
        that key the per-event random numbers (default: a hash of the event's features);
        ``monitor`` an optional callable(x_adv (N, F) numpy array) -> bool saying whether a
        whole result would pass the audit's checks (the adversarial network with
        ``keep_hidden`` keeps only states it accepts). Settings given here override those
        given to the constructor.
        """
        s = self.resolve({**self._given, **settings})
        if not isinstance(model, torch.nn.Module):
            raise AuditError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if objective not in OBJECTIVES:
            raise AuditError(f"unknown objective '{objective}'; known: {list(OBJECTIVES)}")
        if not isinstance(envelope, Envelope):
            raise AuditError(f"envelope must be an hsaudit.attacks.Envelope, got {type(envelope).__name__}")
        seed = check_int("seed", seed, 0)
        if monitor is not None and not callable(monitor):
            raise AuditError(f"monitor must be callable (x_adv -> bool), got {type(monitor).__name__}")
        x_in = x
        if isinstance(x, torch.Tensor):
            out_device = x.device
            x = x.detach().to(torch.float32)
        else:
            out_device = torch.device("cpu")
            try:
                x = torch.as_tensor(np.asarray(x, dtype=np.float32))
            except (TypeError, ValueError) as exc:
                raise AuditError(f"attack input x must be a numeric (N, F) array: {exc}") from None
        if x.ndim != 2 or tuple(x.shape) != tuple(envelope.nominal.shape):
            raise AuditError(
                f"attack input x has shape {tuple(x.shape)} but the envelope is {tuple(envelope.nominal.shape)}: "
                "pass the events the envelope was built for"
            )
        n = x.shape[0]
        if n == 0:
            raise AuditError("no events to attack (empty input)")
        if not bool(torch.isfinite(x).all()):
            raise AuditError("attack input x contains NaN or inf")
        if not bool(envelope.contains(x, atol=1e-5 * (1 + float(x.abs().max()))).all()):
            raise AuditError("attack input x is outside its envelope; pass the nominal events of the envelope")
        lab = _vector("labels", labels, n)
        if lab is not None:
            lab = lab.to(torch.float32)
        if lab is not None and not bool(((lab == 0) | (lab == 1)).all()):
            raise AuditError("labels must be 0 (background) or 1 (signal)")
        w = _vector("weights", weights, n)
        if w is None:
            w = torch.ones(n)
        elif not bool(torch.isfinite(w).all()):
            raise AuditError("weights contain NaN or inf")
        m = _vector("mask", mask, n)
        m = torch.ones(n, dtype=torch.bool) if m is None else m.to(torch.bool)
        if objective in ("signal_as_background", "background_as_signal") and lab is None:
            raise AuditError(f"objective '{objective}' needs labels (1 = signal, 0 = background)")
        if objective == "signal_as_background":
            attacked = m & (lab == 1)
            sign = -torch.ones(n)
        elif objective == "background_as_signal":
            attacked = m & (lab == 0)
            sign = torch.ones(n)
        else:
            attacked = m.clone()
            sign = torch.full((n,), float(s["direction"]))
        target = attacked
        if self.universal:
            om = _vector("objective_mask", objective_mask, n)
            if om is not None:
                target = target & om.to(torch.bool)
            attacked = m.clone()
        key_features = None
        if event_keys is None:
            keys, key_features = None, envelope.nominal.detach().cpu()
        else:
            keys = np.asarray(event_keys)
            if keys.shape != (n,) or not np.issubdtype(keys.dtype, np.integer):
                raise AuditError(f"event_keys must be (N,) = ({n},) integers, got shape {keys.shape} dtype {keys.dtype}")
            keys = splitmix64(keys.astype(np.uint64))
        dev = model_device(model)
        t0 = time.perf_counter()
        ctx = AttackContext(
            model, dev, x.to(dev), envelope.lower.to(dev), envelope.upper.to(dev), envelope.integer.to(dev),
            envelope.nominal.to(dev), envelope.up_shift.to(dev), envelope.down_shift.to(dev), sign.to(dev),
            attacked.to(dev), target.to(dev), None if lab is None else lab.to(dev), w.to(dev), keys, seed, objective, envelope,
            envelope.feature_names, monitor, key_features,
        )
        x_adv = x.to(dev).clone()
        info: dict = {}
        extra: dict = {}
        movable = attacked & (envelope.width > 0).any(dim=1)
        if not self.is_trivial(s) and bool(movable.any()):
            with frozen(model):
                if self.per_event:
                    idx_all = torch.nonzero(movable).squeeze(1)
                    parts = []
                    for i in range(0, len(idx_all), s["batch_size"]):
                        idx = idx_all[i:i + s["batch_size"]]
                        # one chunk of every event: the context itself, no copies of its rows
                        sub = ctx if len(idx) == n else ctx.rows(idx)
                        xa, inf_c, ext_c = self.run(sub, s)
                        x_adv[idx.to(dev)] = xa.detach()
                        parts.append((idx, inf_c, ext_c))
                    info, extra = self.merge_chunks(parts, n, dev)
                else:
                    ctx.attacked = movable.to(dev)
                    xa, info, extra = self.run(ctx, s)
                    x_adv = torch.where(ctx.attacked.unsqueeze(1), xa.detach(), x_adv)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        info = {
            "attack": self.name,
            "objective": objective,
            "seed": seed,
            "settings": {k: v for k, v in s.items()},
            "n_events": n,
            "n_attacked": int(attacked.sum()),
            "device": str(dev),
            "seconds": time.perf_counter() - t0,
            **info,
        }
        del x_in
        return AttackResult(x_adv.to(out_device), attacked.to(out_device), info, extra)

    def merge_chunks(self, parts, n: int, device) -> tuple[dict, dict]:
        """Combine per-chunk extras: (N,) tensors scattered into full-size tensors."""
        extra: dict = {}
        info: dict = {}
        for idx, inf_c, ext_c in parts:
            for k, v in ext_c.items():
                if k not in extra:
                    extra[k] = torch.zeros(n, dtype=v.dtype, device=device)
                extra[k][idx.to(device)] = v
            for k, v in inf_c.items():
                info[k] = info.get(k, 0) + v
        return info, extra


def _vector(name: str, value, n: int):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise AuditError(f"{name} must be a numeric (N,) array: {exc}") from None
    if t.shape != (n,):
        raise AuditError(f"{name} has shape {tuple(t.shape)}, expected ({n},): one value per event")
    return t.to(torch.bool) if t.dtype == torch.bool else t.to(torch.float32)
