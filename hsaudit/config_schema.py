"""The schema of an analysis configuration: every key, its type, its default and its meaning.

One pydantic model per section (unknown keys are refused everywhere) and one model per attack
type (``attacks.<name>`` is a union discriminated by ``type``). ``hsaudit.config.load_config``
validates a whole file against :class:`AnalysisSettings` before anything runs, and turns the
first problem into a one-line ``AuditError`` naming the key path::

    config/my.yaml: attacks.pgd.stpes: unknown setting; known: batch_size, direction, ...

The field descriptions below are the key reference: ``python -m hsaudit.config_docs`` writes
docs/configuration.md and docs/config.schema.json from them. The defaults written here are
the ones the stages use (the attack classes and the training settings take theirs from here).
"""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

SYSTEMATIC_TYPES = ("shift", "weight", "normalization")
FEATURE_KINDS = ("momentum", "angle", "integer", "other")
OBJECTIVES = ("signal_as_background", "background_as_signal", "shift_output")


class Section(BaseModel):
    """A configuration section: unknown keys refused, numbers finite, no silent conversion
    (``'3'`` is not 3, ``yes`` is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=False)


def _none_is_empty(value):
    return {} if value is None else value


# ============================================================================ input
class WeightSanity(Section):
    """Limits on each dataset's event weights, checked after the selection."""

    min_events: int = Field(20, ge=1, description="Fewest nominally selected events a dataset may have.")
    max_weight_share: float = Field(0.1, ge=0, le=1, description=(
        "Largest share of a dataset's yield that one event may carry (max|w| / |sum w|)."))
    min_effective_fraction: float = Field(0.01, ge=0, le=1, description=(
        "Smallest effective sample size (sum w)^2 / sum w^2 as a fraction of the events."))
    action: Literal["stop", "warn"] = Field("stop", description="What a failed limit does: stop the run or warn.")


class NanoAODInput(Section):
    """NanoAOD ROOT files (generated demo events or a user's files) through the coffea selection."""

    kind: Literal["nanoaod"] = Field("nanoaod", description="`nanoaod` (coffea selection) or `flat` (feature tables).")
    chunk_size: int = Field(100_000, gt=0, description=(
        "Events per coffea chunk inside a SelectEvents branch (one branch per input file)."))
    branches: dict[str, str | list[str]] | None = Field(None, description=(
        "Names of the inputs that differ between NanoAOD versions, each a name or a list of candidates "
        "(the first one a file has is used); keys met, jet_id, tau_id_vsjet, tau_id_vsmu, tau_id_vse, "
        "btag; see [NanoAOD versions](#nanoaod-versions-inputbranches)."))
    weight_sanity: WeightSanity | None = Field(None, description=(
        "Per-dataset weight limits checked when the datasets are merged; see "
        "[Weight sanity](#weight-sanity-inputweight_sanity)."))


class FlatLabel(Section):
    column: str = Field(description="Label column.")
    signal: Any = Field(description="Value of the label column that means signal (e.g. `s` or 1).")


class FlatMissing(Section):
    value: float | None = Field(None, description="Marker of a value that is not defined for an event (e.g. -999.0).")
    treatment: Literal["fill", "drop"] = Field("fill", description=(
        "`fill`: write a physical default instead of the marker; `drop`: remove the event from the "
        "regions of a variant in which one of its features is missing."))
    fill: dict[str, float] = Field(default_factory=dict, description=(
        "Value written instead of the marker, per feature, with `default` for the others (0.0)."))
    flags: dict[str, str] = Field(default_factory=dict, description=(
        "Extra 0/1 features (list them in `features`) saying where a column was missing: flag -> column."))


class FlatWeightVariation(Section):
    up: str = Field(description="Column of the up-varied weight.")
    down: str = Field(description="Column of the down-varied weight.")


class FlatShift(Section):
    columns: str | None = Field(None, description=(
        "Pattern of the shifted columns with `{column}` and `{variant}`, e.g. `{column}__{variant}`."))
    recipe: Literal["higgsml_tau_energy_scale"] | None = Field(None, description=(
        "Recompute the shifted columns from the nominal ones (scale factors 1 +- uncertainty)."))
    mmc: Literal["fixed"] | None = Field(None, description="Recipe option: how DER_mass_MMC follows the shift.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.columns is None) == (self.recipe is None):
            raise ValueError("give exactly one of columns: '<pattern>' or recipe: <name>")
        if self.columns is not None:
            if "{column}" not in self.columns or "{variant}" not in self.columns:
                raise ValueError("columns: a pattern with {column} and {variant}, e.g. '{column}__{variant}'")
            if self.mmc is not None:
                raise ValueError("a columns shift takes no other option")
        return self


class DeclaredSigma(Section):
    relative: float | None = Field(None, gt=0, description="Relative sigma_i (fraction of the value).")
    absolute: float | None = Field(None, gt=0, description="Absolute sigma_i (in the feature's unit).")

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.relative is None) == (self.absolute is None):
            raise ValueError("expected exactly one of {relative: x} or {absolute: x}")
        return self


class FlatInput(Section):
    """Flat per-event feature tables (CSV, parquet, flat ROOT TTree); see docs/higgsml.md."""

    kind: Literal["flat"] = Field(description="`flat`: read per-event feature tables instead of NanoAOD.")
    format: Literal["csv", "parquet", "root"] | None = Field(None, description="File format; default from the suffix.")
    tree: str | None = Field(None, description="ROOT only: the TTree name (default: the file's only TTree).")
    id_column: str | None = Field(None, description="One event-id column: run=1, luminosityBlock=0, event=<id>.")
    id_columns: list[str] | None = Field(None, min_length=3, max_length=3, description=(
        "Three id columns [run, luminosityBlock, event] (the default when the file has them); "
        "neither: event = row number."))
    weight_column: str | None = Field(None, description="Per-event weight column (default: 1 per event).")
    weight_variations: dict[str, FlatWeightVariation] = Field(default_factory=dict, description=(
        "Weight systematic -> {up, down} columns (default `<weight_column>__<syst>_up/down`)."))
    label: FlatLabel | None = Field(None, description=(
        "Keep only the rows whose label agrees with the dataset's is_signal (one mixed file can feed two datasets)."))
    mt_column: str | None = Field(None, description="Transverse-mass column used by regions.<r>.mt_min / mt_max.")
    charge_column: str | None = Field(None, description=(
        "Sign of the charge product (< 0 opposite, > 0 same); without it every region must use charge: any."))
    missing: FlatMissing = Field(default_factory=FlatMissing, description="Missing-value marker and treatment.")
    shifts: dict[str, FlatShift] = Field(default_factory=dict, description=(
        "How each shift systematic gets its variants: shifted columns or a recipe (default: columns "
        "`{column}__{variant}` if present, else declared sigma_i)."))
    declared_uncertainties: dict[str, dict[str, DeclaredSigma]] = Field(default_factory=dict, description=(
        "Per-feature sigma_i of a shift systematic without variants: syst -> feature -> {relative|absolute: x}."))
    chunk_size: int | None = Field(None, gt=0, description="Rows per chunk when reading (unused by most readers).")
    weight_sanity: WeightSanity | None = Field(None, description="Limits on the event weights.")

    @model_validator(mode="after")
    def _one_id(self):
        if self.id_columns is not None and self.id_column is not None:
            raise ValueError("give either id_column (one id) or id_columns (three), not both")
        return self


def _input_kind(value) -> str:
    if isinstance(value, dict):
        return value.get("kind", "nanoaod") if value.get("kind", "nanoaod") in ("nanoaod", "flat") else "bad-kind"
    return getattr(value, "kind", "nanoaod")


InputSettings = Annotated[
    Union[Annotated[NanoAODInput, Tag("nanoaod")], Annotated[FlatInput, Tag("flat")]],
    Discriminator(_input_kind, custom_error_type="unknown_input_kind",
                  custom_error_message="input.kind must be nanoaod or flat"),
]


# ============================================================================ datasets
class GenerateSpec(Section):
    n_events: int = Field(gt=0, description="Events to generate (demo generator, docs/demo_generator.md).")
    n_files: int = Field(1, gt=0, description="Files to split them into (one SelectEvents branch group per file).")

    @model_validator(mode="after")
    def _files_le_events(self):
        if self.n_files > self.n_events:
            raise ValueError(f"n_files ({self.n_files}) must be <= n_events ({self.n_events})")
        return self


class DatasetSettings(Section):
    process: str | None = Field(None, description=(
        "Process label (default: the dataset name): systematics refer to it; the generator process of demo events."))
    is_signal: bool = Field(description="true for signal datasets, false for backgrounds.")
    cross_section: float | None = Field(None, gt=0, description=(
        "Cross section in pb (required for NanoAOD; flat tables may carry their own weights)."))
    files: list[str] = Field(default_factory=list, description=(
        "Input files: absolute or relative to the configuration's folder; `~`, `$VARS` and "
        "`${VAR:-default}` expanded, globs allowed; files with zero entries or no selected event are "
        "skipped with a warning."))
    generate: GenerateSpec | None = Field(None, description="Generate demo events instead of reading files.")

    @field_validator("files", mode="before")
    @classmethod
    def _one_file(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _files_or_generate(self):
        if not self.files and self.generate is None:
            raise ValueError("give either 'files' (your ROOT/CSV/parquet files) or 'generate' (demo events)")
        return self


# ============================================================================ selection
class MuonSelection(Section):
    pt_min: float = Field(description="Muon pt threshold (GeV) of the full selection.")
    abs_eta_max: float = Field(description="Muon |eta| limit.")
    iso_max: float = Field(description="Muon relative isolation limit (pfRelIso04_all).")
    tight_id: bool = Field(True, description="Require the tight muon ID.")


class TauSelection(Section):
    pt_min: float = Field(description="Tau_h pt threshold (GeV) of the full selection.")
    abs_eta_max: float = Field(description="Tau_h |eta| limit.")
    deeptau_vsjet_min: int = Field(description=(
        "Minimum idDeepTau2018v2p5VSjet working point (1-8); older NanoAOD falls back to the 2017v2p1 bit masks."))
    deeptau_vsmu_min: int | None = Field(None, description=(
        "Minimum working point against muons faking a tau_h (1-4; none: no cut)."))
    deeptau_vse_min: int | None = Field(None, description=(
        "Minimum working point against electrons faking a tau_h (1-8; none: no cut)."))
    decay_modes: list[int] | None = Field(None, description="Accepted decay modes (none: all).")


class VetoMuonSelection(Section):
    pt_min: float = Field(10.0, description="pt threshold (GeV) of muons counting for the extra-muon veto.")
    abs_eta_max: float = Field(2.4, description="|eta| limit of veto muons.")
    iso_max: float = Field(0.3, description="Isolation limit of veto muons.")


class JetSelection(Section):
    pt_min: float = Field(description="Jet pt threshold (GeV).")
    abs_eta_max: float = Field(description="Jet |eta| limit.")
    jet_id_min: int = Field(description="Minimum jet ID.")
    lepton_delta_r_min: float = Field(0.5, description="Jets closer than this to the muon or tau are removed.")


class BJetSelection(Section):
    btag_min: float = Field(description="b-tag discriminant threshold (DeepJet).")
    pt_min: float = Field(description="b-jet pt threshold (GeV).")
    abs_eta_max: float = Field(description="b-jet |eta| limit.")


class Preselection(Section):
    muon_pt_min: float | None = Field(None, description="Looser muon pt threshold of the stored events (default: muon.pt_min).")
    tau_pt_min: float | None = Field(None, description="Looser tau pt threshold of the stored events (default: tau.pt_min).")


class CutBounds(Section):
    min: float | None = Field(None, description="Inclusive lower bound.")
    max: float | None = Field(None, description="Exclusive upper bound.")

    @model_validator(mode="after")
    def _some_bound(self):
        if self.min is None and self.max is None:
            raise ValueError("expected {min: x} and/or {max: y}")
        return self


class SelectionSettings(Section):
    """NanoAOD inputs use the object keys; flat inputs only ``cuts``."""

    muon: MuonSelection | None = Field(None, description="NanoAOD: muon selection.")
    tau: TauSelection | None = Field(None, description="NanoAOD: hadronic tau selection.")
    extra_muon_veto: VetoMuonSelection | None = Field(None, description=(
        "NanoAOD: reject events with a second muon (e.g. Z -> mumu with a muon reconstructed as tau_h)."))
    jet: JetSelection | None = Field(None, description="NanoAOD: jet selection.")
    bjet: BJetSelection | None = Field(None, description="NanoAOD: b-jets of the b-veto.")
    pair_delta_r_min: float = Field(0.5, description="NanoAOD: minimum Delta R of the muon-tau pair.")
    b_veto: bool = Field(False, description="NanoAOD: reject events with a b-tagged jet.")
    preselection: Preselection | None = Field(None, description=(
        "NanoAOD: looser thresholds that define which events are stored, so that events can migrate "
        "into the selection in a shifted variant."))
    cuts: dict[str, CutBounds] | None = Field(None, description="Flat input: per-variant cuts {column: {min, max}}.")


# ============================================================================ regions, features, systematics
class RegionSettings(Section):
    charge: Literal["opposite", "same", "any"] = Field("any", description="Charge of the muon-tau pair.")
    mt_min: float | None = Field(None, description="Lower bound on mT of the muon and MET (GeV).")
    mt_max: float | None = Field(None, description="Upper bound on mT of the muon and MET (GeV).")


class FeatureSettings(Section):
    name: str = Field(description="Feature name (NanoAOD: one of the selection's features).")
    kind: Literal["momentum", "angle", "integer", "other"] = Field("other", description=(
        "momentum | angle | integer | other: how attacks step it (relative, absolute, integer)."))
    column: str | None = Field(None, description="Flat input: the column it is read from (default: the name).")


class SystematicSettings(Section):
    type: Literal["shift", "weight", "normalization"] = Field(description=(
        "Object-level shift (features move, events migrate), per-event weight variation, or "
        "log-normal normalisation."))
    uncertainty: float = Field(description="The +-1 sigma size (relative, e.g. 0.03 for 3%).")
    object: str | None = Field(None, description=(
        "Shifts: tau, jet, muon or met_unclustered (required for NanoAOD); weights: the object whose pt "
        "enters pt_slope; optional for flat tables."))
    processes: list[str] | None = Field(None, description=(
        "Processes it applies to (default: all); a flat dataset it does not apply to needs none of its shifted columns."))
    pt_slope: float = Field(0.0, description=(
        "Weight variations: the relative uncertainty grows by this per GeV of the object's pt above 25 GeV."))
    description: str = Field("", description="Free text shown in the report.")

    @field_validator("uncertainty")
    @classmethod
    def _positive(cls, value):
        if value < 0:
            raise ValueError(f"negative uncertainty {value}")
        if value == 0:
            raise ValueError("zero uncertainty: remove the systematic instead")
        return value


# ============================================================================ models and training
class ModelSettings(Section):
    architecture: str = Field("mlp", description="Network architecture: mlp (2 x 200 ReLU) or deep_mlp (4 x 300).")
    hidden: list[Annotated[int, Field(gt=0)]] | None = Field(None, min_length=1, description=(
        "Hidden layer sizes (default: the architecture's)."))
    activation: str | None = Field(None, description="Activation (relu, elu, selu, silu, tanh; default: the architecture's).")
    dropout: float | None = Field(None, ge=0, lt=1, description="Dropout probability (default 0).")
    penalty: dict[str, Annotated[float, Field(ge=0)]] | None = Field(None, description=(
        "Systematics-aware penalty of Wunsch et al. (2020): systematic -> lambda."))
    torchscript: str | None = Field(None, description=(
        "Import a TorchScript model file instead of training (relative to the config's folder)."))
    features: list[str] | None = Field(None, description="Imported models: their input features in order (default: all).")


class SplitSettings(Section):
    train: float = Field(0.6, ge=0, le=1, description="Fraction of events for training.")
    validation: float = Field(0.2, ge=0, le=1, description="Fraction for validation (early stopping).")
    test: float = Field(0.2, ge=0, le=1, description="Fraction for the test set (evaluation, attacks, fits).")


class TrainingSection(Section):
    """Shared by every model (Adam, minibatches, early stopping; hsaudit.ml.training)."""

    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
    batch_size: int = Field(1000, gt=0, description="Minibatch size.")
    max_epochs: int = Field(200, gt=0, description="Most epochs.")
    patience: int = Field(5, gt=0, description="Early stopping: epochs without improvement of the validation loss.")
    min_delta: float = Field(0.0, ge=0, description="Early stopping: smallest improvement that counts.")
    seed: int = Field(0, description="Seed of initialisation and minibatch order.")
    penalty_bins: int = Field(20, gt=0, description="Bins of the penalty's differentiable NN-output histograms.")
    penalty_warmup_epochs: int = Field(3, ge=0, description=(
        "Ramp the penalty lambdas linearly from 0 to full strength over this many epochs "
        "(early stopping starts after it)."))
    penalty_on: Literal["background", "signal", "all"] = Field("background", description=(
        "Whose events enter the penalty histograms."))
    class_balance: bool = Field(True, description="Weight signal and background to equal totals in the loss.")
    device: str = Field("auto", description="auto (CUDA when available), cpu or cuda[:i].")
    split: SplitSettings = Field(default_factory=SplitSettings, description=(
        "Train / validation / test fractions (a hash of the event id decides)."))
    split_salt: str = Field("audit-split", description="Salt of the split hash.")
    progress: bool = Field(True, description="Print one line per epoch.")

    @model_validator(mode="after")
    def _fractions(self):
        s = self.split
        if s.train <= 0 or s.validation <= 0 or s.train + s.validation + s.test > 1 + 1e-9:
            raise ValueError(f"split fractions must be train > 0, validation > 0 and sum <= 1, got "
                             f"{s.train}, {s.validation}, {s.test}")
        return self


# ============================================================================ attacks
class AttackSettingsBase(Section):
    objective: Literal["signal_as_background", "background_as_signal", "shift_output"] | None = Field(None, description=(
        "Objective of this attack (default: audit.objective)."))
    batch_size: int = Field(65536, gt=0, description="Events per batch on the device.")
    direction: Literal[1, -1] = Field(1, description="shift_output: +1 pushes the NN output towards signal, -1 away.")

    def keeps_hidden(self) -> bool:
        """Does the attack keep only states the visibility test calls hidden (so that it needs
        the model's calibration while it runs)? Only attacks with a ``keep_hidden`` setting can."""
        return False


class RandomSettings(AttackSettingsBase):
    """Uniform perturbation inside the envelope: the control every attack must beat."""

    type: Literal["random"] = Field(description="`random`")
    fraction: float = Field(1.0, ge=0, le=1, description="Fraction of the envelope the random points fill.")


class FGSMSettings(AttackSettingsBase):
    """Iterated fast gradient sign (Nachman & Shimmin 2019)."""

    type: Literal["fgsm"] = Field(description="`fgsm`")
    eps: float = Field(0.001, ge=0, description="Relative step per iteration (momenta).")
    iterations: int = Field(10, ge=1, description="Iterations.")
    eps_abs: float | None = Field(None, ge=0, description="Absolute step per iteration (angles; default: eps).")
    absolute_features: list[str | int] | None = Field(None, description="Features stepped absolutely (default: by kind).")
    feature_kinds: dict[str, str] | list[str] | None = Field(None, description="Per-feature kinds (default: the features').")


class PGDSettings(AttackSettingsBase):
    """Projected gradient descent in the envelope box."""

    type: Literal["pgd"] = Field(description="`pgd`")
    steps: int = Field(40, ge=0, description="Gradient steps.")
    step_fraction: float = Field(0.1, ge=0, le=1, description="Step size as a fraction of the envelope width.")
    random_start: bool = Field(False, description="Start from a random point of the envelope.")
    keep_best: bool = Field(True, description="Keep each event's best iterate, not the last.")


class NuisancePGDSettings(AttackSettingsBase):
    """PGD on one nuisance parameter theta per event, interpolating its down/nominal/up variants."""

    type: Literal["nuisance_pgd"] = Field(description="`nuisance_pgd`")
    k: float | None = Field(None, ge=0, description="Bound |theta| <= k (default: audit.n_sigma).")
    steps: int = Field(40, ge=0, description="Gradient steps.")
    step_fraction: float = Field(0.1, ge=0, le=1, description="Step size as a fraction of 2k.")


class NuisanceFieldSettings(AttackSettingsBase):
    """A smooth, bounded nuisance field theta(inputs) applied to every event."""

    type: Literal["nuisance_field"] = Field(description="`nuisance_field`")
    inputs: list[str | int] | None = Field(None, min_length=1, description=(
        "Features theta depends on (required)."))
    k: float | None = Field(None, ge=0, description="Bound |theta| <= k (default: audit.n_sigma).")
    knots: int = Field(8, ge=2, description="Spline knots per input.")
    smoothness: float = Field(1.0, ge=0, description="Weight of the curvature penalty.")
    steps: int = Field(200, ge=0, description="Optimiser steps.")
    learning_rate: float = Field(0.05, gt=0, description="Adam learning rate.")
    train_batch_size: int = Field(8192, gt=0, description="Events per optimiser step.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_input(cls, value):
        return [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value


class AdversarialNetworkSettings(AttackSettingsBase):
    """A network g(x) = x + delta(x) trained against the classifier (Nachman & Shimmin 2019)."""

    type: Literal["adversarial_network"] = Field(description="`adversarial_network`")
    hidden: list[Annotated[int, Field(gt=0)]] = Field([300, 300, 300, 300], min_length=1, description="Hidden layers of g.")
    epochs: int = Field(20, ge=0, description="Training epochs.")
    train_batch_size: int = Field(512, gt=0, description="Minibatch size.")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    lambda_cls: float = Field(1.0, ge=0, description="Weight of the background NN-output term.")
    lambda_obs: float = Field(0.1, ge=0, description="Weight of the observable (feature) term.")
    rho: float = Field(1.0, ge=0, le=1, description="delta bounded by tanh times rho times the envelope.")
    ks_obs_max: float = Field(0.04, ge=0, description="Stop when a feature's KS statistic exceeds this.")
    ks_nn_max: float = Field(0.02, ge=0, description="Stop when the NN output's KS statistic exceeds this.")
    ks_check_every: int = Field(0, ge=0, description="Check the KS stop every this many steps (0: once per epoch).")
    lambda_corr: float = Field(0.0, ge=0, description="Weight of the correlation-change term.")
    corr_max: float = Field(0.0, ge=0, description="Stop when the correlation change exceeds this (0: no stop).")
    keep_hidden: bool = Field(False, description=(
        "Keep only states that the audit's own checks call hidden (every region, after re-selection)."))

    def keeps_hidden(self) -> bool:
        return self.keep_hidden


class CONSERVAttackSettings(AttackSettingsBase):
    """Greedy search under histogram and correlation constraints (Bechtle et al. 2026)."""

    type: Literal["conservattack"] = Field(description="`conservattack`")
    iterations: int = Field(10, ge=0, description="Sweeps over the events.")
    bins: int = Field(100, ge=2, description="Histogram bins per feature.")
    min_change: float = Field(0.003, ge=0, description="Smallest candidate step (in clean standard deviations).")
    step: float = Field(0.01, ge=0, description="First candidate step of the geometric ladder.")
    max_step: float = Field(3.0, ge=0, description="Largest candidate step.")
    n_steps: int = Field(24, ge=0, description="Candidate steps of the ladder.")
    alpha: float = Field(1.0, ge=0, description="Weight of the JSD cost.")
    beta: float = Field(1.0, ge=0, description="Weight of the correlation cost.")
    jsd_cap: float = Field(0.005, ge=0, description="Per-step JSD cap.")
    corr_cap: float = Field(0.005, ge=0, description="Per-step correlation cap.")
    constraint_mode: Literal["global", "published"] = Field("global", description=(
        "global: the paper's cumulative limits; published: the published code's caps."))
    jsd_max: float = Field(0.06, ge=0, description="Global JSD limit per feature.")
    corr_rel_max: float = Field(0.006, ge=0, description="Global relative correlation-change limit.")
    jsd_total_cap: float = Field(0.005, ge=0, description="Cap of the summed JSD increase.")
    choose: Literal["cheapest", "largest"] = Field("cheapest", description="Which accepted candidate step to take.")
    sub_bins: int = Field(1, ge=1, description="Sub-bins per histogram bin.")
    block_size: int = Field(128, ge=1, description="Events per block of the search.")
    retry: bool = Field(True, description="Retry rejected events in later rounds.")
    max_rounds: int = Field(1000000, ge=1, description="Most rounds per sweep.")
    block_rounds: int = Field(0, ge=0, description="Rounds per block (0: until no event moves).")

    @model_validator(mode="after")
    def _ladder(self):
        if self.max_step < self.step:
            raise ValueError(f"max_step ({self.max_step}) must be >= step ({self.step})")
        return self


ATTACK_SETTINGS: dict[str, type[AttackSettingsBase]] = {
    "random": RandomSettings, "fgsm": FGSMSettings, "pgd": PGDSettings, "nuisance_pgd": NuisancePGDSettings,
    "nuisance_field": NuisanceFieldSettings, "adversarial_network": AdversarialNetworkSettings,
    "conservattack": CONSERVAttackSettings,
}
# keys of an attack entry that are not settings of the algorithm
ENTRY_KEYS = ("type", "objective")


def _attack_type(value) -> str | None:
    t = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return t if t in ATTACK_SETTINGS else None


AttackSettings = Annotated[
    Union[tuple(Annotated[cls, Tag(name)] for name, cls in ATTACK_SETTINGS.items())],
    Discriminator(_attack_type, custom_error_type="unknown_attack_type",
                  custom_error_message="unknown attack type"),
]


def attack_defaults(name: str, common: bool = True) -> dict:
    """The settings of attack type ``name`` with their defaults (without ``type`` and
    ``objective``; without the settings every attack has unless ``common``)."""
    cls = ATTACK_SETTINGS[name]
    skip = set(ENTRY_KEYS) | (set() if common else set(AttackSettingsBase.model_fields))
    return {k: f.get_default(call_default_factory=True) for k, f in cls.model_fields.items() if k not in skip}


# ============================================================================ audit, checks, fit
class VerdictSettings(Section):
    n_sigma: float = Field(2.0, gt=0, description="Standard deviations of (hidden - quoted) needed to decide.")
    null_quantile: float = Field(0.95, gt=0, lt=1, description=(
        "Quantile of the maximum of as many random-control (null) impacts as there are attacks."))


class AuditSection(Section):
    systematics: list[str] | None = Field(None, description="Systematics whose envelopes are attacked (default: every shift).")
    attacks: list[str] | None = Field(None, description="Attacks to run (default: every configured one).")
    n_sigma: float = Field(1.0, gt=0, description="Envelope size in units of the systematic.")
    objective: Literal["signal_as_background", "background_as_signal", "shift_output"] = Field(
        "shift_output", description="Default attack objective.")
    null_seeds: int = Field(20, ge=2, description=(
        "Random-control seeds per (model, systematic): hidden rate and null distribution of impacts "
        "(at least 20 for a verdict)."))
    attack_seeds: int = Field(3, ge=0, description=(
        "Extra seeds each stochastic attack is rerun with for the seed part of its impact's uncertainty (0: off)."))
    verdict: VerdictSettings = Field(default_factory=VerdictSettings, description="How impacts become a verdict.")


class ChecksSection(Section):
    """The calibrated data-visibility test that decides "hidden", and the papers' statistics
    reported next to it (docs/audit.md)."""

    # the papers' statistics (hsaudit.attacks.checks)
    ks_max: float = Field(0.04, ge=0, description="Kolmogorov-Smirnov limit per feature.")
    chi2_pvalue_min: float = Field(0.05, ge=0, description="Smallest chi2 p-value per feature histogram.")
    jsd_max: float = Field(0.06, ge=0, description="Jensen-Shannon distance limit per feature.")
    correlation_rel_max: float = Field(0.006, ge=0, description="Limit of the relative change of the correlation matrix.")
    nn_output_chi2_pvalue_min: float = Field(0.05, ge=0, description="Smallest chi2 p-value of the NN output.")
    nn_output_ks_max: float = Field(0.02, ge=0, description="KS limit of the NN output.")
    band_tolerance_sigma: float = Field(1.0, ge=0, description=(
        "Band check: attacked histogram within the standard +-1 sigma band widened by this many MC-stat sigma."))
    band_max_outside_fraction: float = Field(0.0, ge=0, description="Band check: largest fraction of bins outside.")
    bins: int = Field(20, ge=1, description="Bins of the chi2 and band histograms.")
    jsd_bins: int = Field(100, ge=1, description="Bins of the JSD histograms.")
    # the data-visibility test (hsaudit.visibility)
    alpha: float = Field(0.05, gt=0, lt=1, description="False-alarm rate of the global test.")
    power_max: float = Field(0.5, gt=0, le=1, description="Hidden: data would see the attack in at most this fraction of experiments.")
    n_bins: int = Field(10, ge=1, description="Equal-population bins per feature look.")
    min_expected: float = Field(10.0, gt=0, description="Bins are merged until each expects this many events.")
    min_effective: float = Field(10.0, ge=0, description="... and holds this many effective MC events.")
    pair_bins: int = Field(3, ge=2, description="Grid per axis of a feature-pair look.")
    looks: list[Literal["feature", "pair", "nn_output"]] = Field(["feature", "pair", "nn_output"], min_length=1,
                                                              description="Kinds of looks.")
    features: list[str] | None = Field(None, min_length=1, description="Features that get looks (default: all).")
    pair_features: list[str] | None = Field(None, min_length=1, description="Features whose pairs get looks (default: features).")
    n_toys: int = Field(1000, ge=200, description="Null toys calibrating the minimum p-value.")
    n_test_toys: int | None = Field(None, ge=200, description="Independent null toys measuring the false-alarm rate (default: n_toys).")
    noise_correction: Literal["look", "bin", "none"] = Field("look", description="How MC noise of events crossing bin edges is removed.")
    seed: int = Field(0, ge=0, description="Offset added to the caller's seed.")
    toy_block: int = Field(200, ge=1, description="Toys per block (bounds memory).")
    max_matrix_mb: float = Field(64.0, gt=0, description="Size of one dense one-hot block (MB).")
    n_threads: int = Field(0, ge=0, description="Threads drawing the toys (0: all cores; results do not depend on it).")

    def published_thresholds(self) -> dict:
        """The papers' statistics' thresholds (hsaudit.attacks.checks)."""
        return {k: getattr(self, k) for k in THRESHOLD_KEYS}

    def visibility_keys(self) -> dict:
        """The calibrated test's settings (hsaudit.visibility.VisibilitySettings.from_config)."""
        return self.model_dump(exclude=set(THRESHOLD_KEYS))


THRESHOLD_KEYS = ("ks_max", "chi2_pvalue_min", "jsd_max", "correlation_rel_max", "nn_output_chi2_pvalue_min",
                  "nn_output_ks_max", "band_tolerance_sigma", "band_max_outside_fraction", "bins", "jsd_bins")


def threshold_defaults() -> dict:
    """The defaults of the papers' check thresholds (``checks`` keys of hsaudit.attacks.checks)."""
    return {k: ChecksSection.model_fields[k].default for k in THRESHOLD_KEYS}


class ShapeTreatment(Section):
    symmetrise: bool = Field(True, description="Symmetrise up/down templates.")
    smoothing: Literal["none", "running_mean"] = Field("none", description="Template smoothing.")
    smoothing_width: int = Field(3, ge=3, description="Odd window of the running mean.")
    prune: bool = Field(True, description="Prune shape effects compatible with MC noise.")
    prune_pvalue: float = Field(0.05, ge=0, le=1, description="p-value below which a shape effect is kept.")
    keep_normalisation: bool = Field(True, description="Keep the normalisation effect of a pruned shape.")

    @field_validator("smoothing_width")
    @classmethod
    def _odd(cls, value):
        if value % 2 == 0:
            raise ValueError(f"must be an odd integer >= 3, got {value}")
        return value


class ClosureSettings(Section):
    pull_mean_max: float = Field(0.1, gt=0, description="Gate on |pull mean| of the nominal toys.")
    coverage_68_tolerance: float = Field(0.02, gt=0, description="Gate on |68% coverage - 0.683|.")
    n_se: float = Field(2.0, gt=0, description="A deviation outside a gate fails only if it is this many standard errors.")
    pull_width_tolerance: float | None = Field(None, gt=0, description="Gate on |pull width - 1| (none: not gated).")


def _treatment_switch(value) -> str:
    return "switch" if isinstance(value, bool) else "mapping"


class FitSection(Section):
    channels: list[str] | None = Field(None, description="Regions fitted (default: every region).")
    n_bins: int = Field(10, gt=0, description="NN-output bins per channel.")
    binning: Literal["uniform", "optimised"] = Field("optimised", description="uniform or optimised bin edges.")
    min_background_per_bin: float = Field(1.0, ge=0, description="Optimised binning: least background per bin.")
    max_relative_stat_uncertainty: float = Field(0.3, ge=0, description="Optimised binning: largest relative MC-stat uncertainty per bin.")
    n_toys: int = Field(1000, gt=0, description="Pseudo-experiments per scenario.")
    toys_per_chunk: int | None = Field(None, gt=0, description="Toys per PseudoExperiments branch, for all of a model's scenarios together (default: n_toys).")
    mu_true: float = Field(1.0, description="Signal strength the toys are generated with.")
    mu_bounds: list[float] = Field([-5.0, 10.0], min_length=2, max_length=2, description="Fit range of mu [low, high].")
    mc_stat_uncertainty: bool = Field(True, description=(
        "Barlow-Beeston-lite `staterror` per bin; false treats the templates as exact."))
    max_iterations: int = Field(500, gt=0, description="Most iterations per toy fit.")
    n_replicas: int = Field(50, ge=2, description="Bootstrap replicas for the MC-statistics uncertainty of every impact.")
    shape_treatment: Annotated[
        Union[Annotated[ShapeTreatment, Tag("mapping")], Annotated[bool, Tag("switch")]],
        Discriminator(_treatment_switch)] = Field(default_factory=ShapeTreatment, description=(
            "Template treatment (a mapping, or true/false to switch every treatment on/off)."))
    closure: ClosureSettings = Field(default_factory=ClosureSettings, description="Closure gate of the nominal toys.")

    @field_validator("mu_bounds")
    @classmethod
    def _ordered(cls, value):
        if value[0] >= value[1]:
            raise ValueError(f"expected [low, high] with low < high, got {value}")
        return value


# ============================================================================ the whole file
class AnalysisSettings(Section):
    """An analysis configuration file."""

    name: str = Field(description="Name of the analysis (reports and output paths).")
    seed: int = Field(description=(
        "Base seed; every random stream (generation, splits, attacks, toys) derives from it and a name."))
    luminosity: float = Field(gt=0, description="Integrated luminosity in 1/pb; normalises NanoAOD datasets.")
    input: InputSettings = Field(default_factory=NanoAODInput, description="Where events come from: `nanoaod` or `flat`.")
    datasets: dict[str, DatasetSettings] = Field(min_length=1, description="Datasets by name.")
    selection: SelectionSettings = Field(default_factory=SelectionSettings, description="Event selection.")
    regions: dict[str, RegionSettings] = Field(
        min_length=1, description="Regions by name; the first is the signal region unless signal_region says otherwise.")
    signal_region: str | None = Field(None, description=(
        "The signal region (default: the first region); the other regions are control regions."))
    features: list[FeatureSettings] = Field(min_length=1, description=(
        "NN input features: a name, or {name, kind, column}."))
    systematics: dict[str, SystematicSettings] = Field(default_factory=dict, description="Systematic uncertainties by name.")
    models: dict[str, ModelSettings] = Field(min_length=1, description="Classifier variants by name.")
    training: TrainingSection = Field(default_factory=TrainingSection, description="Training settings shared by every model.")
    attacks: dict[str, AttackSettings] = Field(default_factory=dict, description="Attacks by name; `type` selects the algorithm.")
    audit: AuditSection = Field(default_factory=AuditSection, description="What is attacked and how the verdict is made.")
    checks: ChecksSection = Field(default_factory=ChecksSection, description="Hidden-ness checks.")
    fit: FitSection = Field(default_factory=FitSection, description="Likelihood fit and pseudo-experiments.")

    @field_validator("regions", mode="before")
    @classmethod
    def _empty_regions(cls, value):
        return {k: _none_is_empty(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("features", mode="before")
    @classmethod
    def _feature_names(cls, value):
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("features")
    @classmethod
    def _unique(cls, value):
        names = [f.name for f in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate features {dupes}")
        return value


# ============================================================================ errors
class ConfigError(Exception):
    """A configuration problem at a key path (``path`` like ``attacks.pgd.steps``)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


_KINDS = {
    "int_type": "an integer", "int_parsing": "an integer", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "string_type": "a string", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "list_type": "a list",
}


def _strip(annotation):
    """(inner annotation, discriminated?) without Annotated / Optional wrappers."""
    discriminated = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            args = typing.get_args(annotation)
            discriminated |= any(isinstance(m, Discriminator) for m in args[1:])
            annotation = args[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation, discriminated


def _union_members(annotation) -> dict[str, Any]:
    out = {}
    for a in typing.get_args(annotation):
        if typing.get_origin(a) is Annotated:
            args = typing.get_args(a)
            tags = [m.tag for m in args[1:] if isinstance(m, Tag)]
            out[tags[0] if tags else getattr(args[0], "__name__", str(args[0]))] = args[0]
        else:
            out[getattr(a, "__name__", str(a))] = a
    return out


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[str, type[BaseModel] | None]:
    """The user's key path of a pydantic error location (union tags dropped) and the model
    that holds its last key (for the list of known keys)."""
    path = ""
    current: Any = root
    holder: type[BaseModel] | None = None
    i = 0
    while i < len(loc):
        item = loc[i]
        ann, discriminated = _strip(current)
        origin = typing.get_origin(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            holder = ann
            path = f"{path}.{item}" if path else str(item)
            field = ann.model_fields.get(item) if isinstance(item, str) else None
            current = field.annotation if field is not None else None
            if field is not None:
                for m in field.metadata:
                    if isinstance(m, Discriminator):
                        current = Annotated[current, m]
        elif origin in (Union, types.UnionType):
            members = _union_members(ann)
            current = members.get(item) if isinstance(item, str) else None
            if current is None and not discriminated:
                path = f"{path}.{item}"
        elif origin is dict:
            path = f"{path}.{item}"
            current = typing.get_args(ann)[1]
        elif origin is list:
            path = f"{path}[{item}]"
            current = typing.get_args(ann)[0]
        else:
            path = f"{path}.{item}" if path else str(item)
            current = None
        i += 1
    ann, _ = _strip(current)
    return path, (ann if isinstance(ann, type) and issubclass(ann, BaseModel) else holder)


def known_keys(model: type[BaseModel] | None) -> list[str]:
    """The keys of a section in the order a user looks for them (an attack's own settings
    first, then type, objective and the settings every attack has)."""
    if model is None:
        return []
    if issubclass(model, AttackSettingsBase):
        common = list(AttackSettingsBase.model_fields)
        return [k for k in model.model_fields if k not in common and k != "type"] + ["type"] + common
    return list(model.model_fields)


def _message(err: dict, known_in: type[BaseModel] | None) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        return f"unknown setting; known: {', '.join(known_keys(known_in))}"
    if kind == "missing":
        return "missing"
    if kind == "literal_error":
        return f"unknown value {value!r} (known: {ctx.get('expected')})"
    if kind == "unknown_attack_type":
        t = value.get("type") if isinstance(value, dict) else None
        what = "missing" if t is None else f"unknown attack type {t!r}"
        return f"type: {what}; known: {', '.join(ATTACK_SETTINGS)}"
    if kind == "unknown_input_kind":
        return f"kind: unknown input kind {value.get('kind')!r}; known: nanoaod, flat"
    if kind in _KINDS:
        return f"expected {_KINDS[kind]}, got {value!r}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}, got {value!r}"
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} entr{'y' if ctx.get('min_length') == 1 else 'ies'}, got {value!r}"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} entries, got {value!r}"
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
    return f"{err['msg']}, got {value!r}"


def explain(error: ValidationError, root: type[BaseModel] | None = None) -> ConfigError:
    """The first problem of a validation error of model ``root`` (default: the whole file)
    as a ConfigError (key path, one-line message); the number of further problems is appended."""
    errors = error.errors(include_url=False)
    err = errors[0]
    path, holder = _walk(tuple(err["loc"]), root or AnalysisSettings)
    message = _message(err, holder)
    if err["type"] in ("unknown_attack_type", "unknown_input_kind"):
        head, _, message = message.partition(": ")
        path = f"{path}.{head}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ConfigError(path, " ".join(message.split()))


def validate_settings(raw: dict) -> AnalysisSettings:
    """The typed configuration of a raw mapping, with the cross-references checked;
    ConfigError naming the key path of the first problem."""
    try:
        settings = AnalysisSettings.model_validate(raw)
    except ValidationError as err:
        raise explain(err) from None
    cross_check(settings)
    return settings


def cross_check(s: AnalysisSettings) -> None:
    """References between sections: names of regions, systematics, attacks, processes, features."""
    kind = s.input.kind
    regions, systs, attacks = list(s.regions), list(s.systematics), list(s.attacks)
    features = [f.name for f in s.features]
    processes = sorted({d.process or n for n, d in s.datasets.items()} | set(s.datasets))
    if not any(d.is_signal for d in s.datasets.values()):
        raise ConfigError("datasets", "no dataset has is_signal: true")
    if all(d.is_signal for d in s.datasets.values()):
        raise ConfigError("datasets", "every dataset is signal: configure at least one background")
    for name, d in s.datasets.items():
        if kind == "nanoaod" and d.cross_section is None:
            raise ConfigError(f"datasets.{name}.cross_section", "missing (needed to normalise NanoAOD events)")
    for name, syst in s.systematics.items():
        if syst.type == "shift" and syst.object is None and kind == "nanoaod":
            raise ConfigError(f"systematics.{name}.object", "missing: a shift systematic moves an object")
        for p in syst.processes or []:
            if p not in processes:
                raise ConfigError(f"systematics.{name}.processes", f"unknown process '{p}' (known: {processes})")
    if s.signal_region is not None and s.signal_region not in s.regions:
        raise ConfigError("signal_region", f"unknown region '{s.signal_region}' (known: {regions})")
    for name, model in s.models.items():
        for syst in model.penalty or {}:
            if syst not in s.systematics:
                raise ConfigError(f"models.{name}.penalty", f"unknown systematic '{syst}' (known: {systs})")
            if s.systematics[syst].type == "normalization":
                raise ConfigError(f"models.{name}.penalty", f"'{syst}' is a normalisation: it cannot shape the NN output")
    for syst in s.audit.systematics or []:
        if syst not in s.systematics:
            raise ConfigError("audit.systematics", f"unknown systematic '{syst}' (known: {systs})")
    for a in s.audit.attacks or []:
        if a not in s.attacks:
            raise ConfigError("audit.attacks", f"unknown attack '{a}' (known: {attacks})")
    for ch in s.fit.channels or []:
        if ch not in s.regions:
            raise ConfigError("fit.channels", f"unknown region '{ch}' (known: {regions})")
    for key in ("features", "pair_features"):
        unknown = [n for n in getattr(s.checks, key) or [] if n not in features]
        if unknown:
            raise ConfigError(f"checks.{key}", f"unknown feature(s) {unknown}; the analysis has {sorted(features)}")
    for name, atk in s.attacks.items():
        if isinstance(atk, NuisanceFieldSettings) and atk.inputs is None:
            raise ConfigError(f"attacks.{name}.inputs", "missing: the features theta depends on")
    _check_selection(s)


def _check_selection(s: AnalysisSettings) -> None:
    sel = s.selection
    given = sel.model_fields_set
    if s.input.kind == "flat":
        extra = sorted(given - {"cuts"})
        if extra:
            raise ConfigError(f"selection.{extra[0]}", "flat input knows only selection.cuts: {column: {min: x, max: y}}")
        return
    if "cuts" in given:
        raise ConfigError("selection.cuts", "cuts on columns are for input.kind: flat; NanoAOD uses the object keys")
    for key in ("muon", "tau", "jet"):
        if getattr(sel, key) is None:
            raise ConfigError(f"selection.{key}", "missing (the NanoAOD selection needs muon, tau and jet)")
    if sel.b_veto and sel.bjet is None:
        raise ConfigError("selection.bjet", "missing: b_veto needs btag_min, pt_min and abs_eta_max")
