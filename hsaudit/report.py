"""The audit report: ``summary.json`` (schema version 2), a console table and one HTML file.

The audit asks, per model variant and systematic: is the largest mismodelling that stays
inside the systematic's +-1 sigma envelope and that data at the analysis luminosity would not
see (a *hidden systematic*, docs/science.md sections 1 and 4) larger in its effect on the
signal strength mu than the impact the analysis quotes for the systematic? Both are
measurements with uncertainties, so the answer has three outcomes (hsaudit.verdict). This
module holds the answer's data model and presentation, independent of how the numbers are
computed:

``systematic_entry``                         the derived keys of one systematic (largest
                                             hidden impact, responsible attack, verdict);
``make_summary`` / ``validate_summary``      build and check the versioned schema
                                             (documented in docs/report.md);
``write_summary`` / ``load_summary``         atomic JSON I/O (validated);
``console_table``                            the short fixed-width table printed at the end of
                                             ``law run AttackAudit``;
``write_html``                               one self-contained HTML report (inline CSS,
                                             figures as base64 PNG data URIs, no scripts, no
                                             external resources).

Model variants are compared as performance (AUC, expected significance) against robustness
(hidden impact), as in the lambda scan of Wunsch, Joerger, Wolf, Quast (2020).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from hsaudit.errors import AuditError
from hsaudit.files import write_atomically
from hsaudit.jsonio import to_json

SCHEMA_VERSION = 2

COVERED = "covered"
LARGER = "larger than quoted"
INCONCLUSIVE = "inconclusive"
VERDICTS = (COVERED, LARGER, INCONCLUSIVE)

_REL_TOL = 1e-9


# --------------------------------------------------------------------------- derived keys


def largest_hidden(attacks: Mapping[str, Mapping], candidates: Iterable[str] | None = None
                   ) -> tuple[float | None, float | None, str | None]:
    """(largest impact_mu, its impact_mu_unc, attack name) among the ``candidates`` (default
    all) with ``hidden`` true; (None, None, None) if none. Ties go to the first attack."""
    best, unc, name = None, None, None
    for attack, entry in attacks.items():
        if candidates is not None and attack not in candidates:
            continue
        if entry.get("hidden") is True:
            impact = float(entry["impact_mu"])
            if best is None or impact > best:
                best, unc, name = impact, float(entry["impact_mu_unc"]), attack
    return best, unc, name


def systematic_entry(*, standard_impact_mu: float, standard_impact_mu_unc: float, standard_power: Mapping,
                     standard: Mapping, attacks: Mapping[str, Mapping], null: Mapping, candidates: Iterable[str],
                     closure_passed: bool, n_sigma: float = 2.0, difference_unc: Mapping | None = None,
                     **optional) -> dict:
    """One ``systematics[SYST]`` entry with the derived keys filled in.

    ``attacks``: ``{ATTACK: {"hidden", "power", "impact_mu", "impact_mu_unc", ...}}``;
    ``candidates``: the attacks that may be responsible (the random control is the null, not a
    candidate); ``null``: the random-control ensemble with its ``quantile_95`` (of the maximum
    of as many null draws as there are candidates). Adds ``largest_hidden_impact_mu`` (+-
    ``_unc``), ``responsible_attack``, ``ratio_hidden_to_standard``, ``verdict``,
    ``verdict_reason`` and ``mc_scale_to_decide`` (hsaudit.verdict.decide). ``optional``
    keys (e.g. ``description``) are copied as they are.
    """
    from hsaudit.verdict import decide

    std = _number(standard_impact_mu, "standard_impact_mu", minimum=0.0)
    std_unc = _number(standard_impact_mu_unc, "standard_impact_mu_unc", minimum=0.0)
    attacks = {a: dict(e) for a, e in attacks.items()}
    candidates = [a for a in candidates if a in attacks]
    for a, e in attacks.items():
        for key in ("hidden", "impact_mu", "impact_mu_unc", "power"):
            if key not in e:
                raise AuditError(f"attack {a!r} needs {key!r} to summarise it")
    largest, largest_unc, responsible = largest_hidden(attacks, candidates)
    diff_unc = None if responsible is None or not difference_unc else difference_unc.get(responsible)
    decision = decide(largest, largest_unc, std, std_unc, float(null["quantile_95"]), n_sigma=n_sigma,
                      difference_unc=diff_unc, closure_ok=bool(closure_passed))
    entry = dict(optional)
    if "standard_output_shift" in entry:
        entry["output_shift_comparison"] = output_shift_comparison(entry["standard_output_shift"], attacks, candidates)
    entry.update(
        standard_impact_mu=std,
        standard_impact_mu_unc=std_unc,
        standard_power={k: float(v) for k, v in standard_power.items()},
        standard={d: dict(v) for d, v in standard.items()},
        attacks=attacks,
        candidates=list(candidates),
        null=dict(null),
        largest_hidden_impact_mu=largest,
        largest_hidden_impact_mu_unc=largest_unc,
        largest_hidden_impact_parts=(dict(attacks[responsible]["impact_parts"])
                                     if responsible is not None and "impact_parts" in attacks[responsible] else None),
        responsible_attack=responsible,
        ratio_hidden_to_standard=(largest / std if largest is not None and std > 0 else None),
        n_sigma=float(n_sigma),
        closure_passed=bool(closure_passed),
        difference_unc=decision.difference_unc,
        verdict_significance=decision.significance,
        verdict=decision.verdict,
        verdict_reason=decision.reason,
        mc_scale_to_decide=(None if decision.mc_scale_needed is None or not math.isfinite(decision.mc_scale_needed)
                            else decision.mc_scale_needed),
    )
    return to_json(entry)


def output_shift_comparison(standard_shift: Mapping, attacks: Mapping[str, Mapping],
                            candidates: Iterable[str] | None = None) -> dict:
    """Does a hidden attack move the signal-region NN-output distribution more than the
    standard +-1 sigma shift? Compared in Wasserstein-1 distance (the attacks' metric
    ``output_shift_wasserstein``; the standard's larger of up and down)."""
    standard = max(float(v.get("wasserstein", 0.0)) for v in standard_shift.values())
    hidden = {a: float(e["metrics"]["output_shift_wasserstein"]) for a, e in attacks.items()
              if e["hidden"] and (candidates is None or a in candidates)
              and "output_shift_wasserstein" in (e.get("metrics") or {})}
    attack = max(hidden, key=hidden.get) if hidden else None
    return {"standard_wasserstein": standard,
            "largest_hidden_wasserstein": hidden[attack] if attack else None,
            "attack": attack,
            "hidden_exceeds_standard": bool(attack is not None and hidden[attack] > standard)}


def make_summary(
    *,
    tool_version: str,
    config: str,
    version: str,
    models: Mapping[str, Mapping],
    figures: Iterable[Mapping] = (),
    created: str | None = None,
    **optional,
) -> dict:
    """A complete, validated summary (numpy scalars converted to Python numbers).

    ``created`` defaults to now (UTC, ISO 8601, seconds). ``optional`` top-level keys (``title``,
    ``notes``, ...) are copied as they are.
    """
    summary = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": tool_version,
        "config": config,
        "version": version,
        "created": created or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "models": models,
        "figures": list(figures),
    }
    for k, v in optional.items():
        if k in summary:
            raise AuditError(f"optional key {k!r} clashes with a required summary key")
        summary[k] = v
    summary = to_json(summary)
    validate_summary(summary)
    return summary


def figure_entry(name: str, paths: Mapping[str, str], report_dir, caption: str) -> dict:
    """A ``summary["figures"]`` entry from ``plotting.save_figure``'s paths.

    The PNG/PDF paths are made relative to ``report_dir`` (POSIX separators); a figure outside
    the report folder is an error, since the report must be movable as one folder.
    """
    report_dir = Path(report_dir).resolve()
    entry = {"name": name, "caption": caption}
    for fmt in ("png", "pdf"):
        if fmt not in paths:
            raise AuditError(f"figure {name!r}: no {fmt} path given (use plotting.save_figure's result)")
        p = Path(paths[fmt]).resolve()
        try:
            entry[fmt] = p.relative_to(report_dir).as_posix()
        except ValueError:
            raise AuditError(f"figure {name!r}: {p} is not inside the report folder {report_dir}") from None
    return entry


# --------------------------------------------------------------------------- validation


def _number(x, path: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise AuditError(f"{path} must be a number, got {type(x).__name__} {x!r}")
    v = float(x)
    if not math.isfinite(v):
        raise AuditError(f"{path} must be a finite number, got {v!r}")
    if minimum is not None and v < minimum:
        raise AuditError(f"{path} must be >= {minimum:g}, got {v!r}")
    if maximum is not None and v > maximum:
        raise AuditError(f"{path} must be <= {maximum:g}, got {v!r}")
    return v


def _opt_number(x, path: str, **kw) -> float | None:
    return None if x is None else _number(x, path, **kw)


def _str(x, path: str, *, allow_none: bool = False, nonempty: bool = True) -> str | None:
    if x is None and allow_none:
        return None
    if not isinstance(x, str):
        raise AuditError(f"{path} must be a string{' or null' if allow_none else ''}, got {type(x).__name__} {x!r}")
    if nonempty and not x.strip():
        raise AuditError(f"{path} must not be empty")
    return x


def _bool(x, path: str) -> bool:
    if not isinstance(x, bool):
        raise AuditError(f"{path} must be true or false, got {type(x).__name__} {x!r}")
    return x


def _mapping(x, path: str, *, nonempty: bool = False) -> Mapping:
    if not isinstance(x, Mapping):
        raise AuditError(f"{path} must be an object (mapping), got {type(x).__name__}")
    for k in x:
        if not isinstance(k, str) or not k:
            raise AuditError(f"{path} has a key {k!r} that is not a non-empty string")
    if nonempty and not x:
        raise AuditError(f"{path} is empty; it needs at least one entry")
    return x


def _list(x, path: str) -> list:
    if not isinstance(x, list | tuple):
        raise AuditError(f"{path} must be a list, got {type(x).__name__}")
    return list(x)


def _get(d: Mapping, key: str, path: str):
    if key not in d:
        raise AuditError(f"{path} is missing the required key '{key}'")
    return d[key]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-15)


def _validate_direction(d, path: str) -> None:
    _mapping(d, path)
    _number(_get(d, "bias", path), f"{path}.bias")
    _number(_get(d, "pull_mean", path), f"{path}.pull_mean")
    _number(_get(d, "pull_width", path), f"{path}.pull_width", minimum=0.0)
    _number(_get(d, "coverage", path), f"{path}.coverage", minimum=0.0, maximum=1.0)


def _validate_check(c, path: str) -> bool:
    _mapping(c, path)
    _str(_get(c, "name", path), f"{path}.name")
    _str(_get(c, "region", path), f"{path}.region")
    _str(_get(c, "feature", path), f"{path}.feature", allow_none=True)
    _number(_get(c, "statistic", path), f"{path}.statistic")
    _number(_get(c, "threshold", path), f"{path}.threshold")
    return _bool(_get(c, "passed", path), f"{path}.passed")


def _validate_attack(a, path: str, power_max: float | None) -> None:
    _mapping(a, path)
    hidden = _bool(_get(a, "hidden", path), f"{path}.hidden")
    power = _number(_get(a, "power", path), f"{path}.power", minimum=0.0, maximum=1.0)
    _number(_get(a, "power_unc", path), f"{path}.power_unc", minimum=0.0)
    _number(_get(a, "impact_mu", path), f"{path}.impact_mu", minimum=0.0)
    unc = _number(_get(a, "impact_mu_unc", path), f"{path}.impact_mu_unc", minimum=0.0)
    parts = a.get("impact_parts")
    if parts is not None and "attack_seeds" in _mapping(parts, f"{path}.impact_parts"):
        mc = _number(_get(parts, "mc_stat", f"{path}.impact_parts"), f"{path}.impact_parts.mc_stat", minimum=0.0)
        sd = _number(parts["attack_seeds"], f"{path}.impact_parts.attack_seeds", minimum=0.0)
        if not _close(unc, math.hypot(mc, sd)):
            raise AuditError(f"{path}.impact_mu_unc is {unc!r} but its parts mc_stat {mc!r} and attack_seeds {sd!r} "
                             f"give {math.hypot(mc, sd)!r} in quadrature")
    _number(_get(a, "fooling_ratio", path), f"{path}.fooling_ratio", minimum=0.0, maximum=1.0)
    published = _list(_get(a, "published", path), f"{path}.published")
    for i, c in enumerate(published):
        _validate_check(c, f"{path}.published[{i}]")
    metrics = _mapping(_get(a, "metrics", path), f"{path}.metrics")
    for k, v in metrics.items():
        _number(v, f"{path}.metrics.{k}")
    if power_max is not None and hidden != (power <= power_max):
        raise AuditError(f"{path}.hidden is {hidden} but its power {power:g} is "
                         f"{'above' if power > power_max else 'within'} the limit {power_max:g}; "
                         "hidden means power <= checks.power_max")
    if "description" in a:
        _str(a["description"], f"{path}.description", nonempty=False)


def _validate_systematic(s, path: str, power_max: float | None) -> None:
    from hsaudit.verdict import decide

    _mapping(s, path)
    std = _number(_get(s, "standard_impact_mu", path), f"{path}.standard_impact_mu", minimum=0.0)
    std_unc = _number(_get(s, "standard_impact_mu_unc", path), f"{path}.standard_impact_mu_unc", minimum=0.0)
    power = _mapping(_get(s, "standard_power", path), f"{path}.standard_power")
    for direction in ("up", "down"):
        _number(_get(power, direction, f"{path}.standard_power"), f"{path}.standard_power.{direction}",
                minimum=0.0, maximum=1.0)
    standard = _mapping(_get(s, "standard", path), f"{path}.standard")
    for direction in ("up", "down"):
        _validate_direction(_get(standard, direction, f"{path}.standard"), f"{path}.standard.{direction}")
    attacks = _mapping(_get(s, "attacks", path), f"{path}.attacks")
    for name, a in attacks.items():
        _validate_attack(a, f"{path}.attacks.{name}", power_max)
    candidates = _list(_get(s, "candidates", path), f"{path}.candidates")
    for c in candidates:
        if c not in attacks:
            raise AuditError(f"{path}.candidates names {c!r}, which is not one of the attacks {sorted(attacks)}")
    null = _mapping(_get(s, "null", path), f"{path}.null")
    null_q = _number(_get(null, "quantile_95", f"{path}.null"), f"{path}.null.quantile_95", minimum=0.0)
    n_seeds = _get(null, "n_seeds", f"{path}.null")
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise AuditError(f"{path}.null.n_seeds must be a positive integer, got {n_seeds!r}")
    largest = _opt_number(_get(s, "largest_hidden_impact_mu", path), f"{path}.largest_hidden_impact_mu", minimum=0.0)
    largest_unc = _opt_number(_get(s, "largest_hidden_impact_mu_unc", path), f"{path}.largest_hidden_impact_mu_unc",
                              minimum=0.0)
    responsible = _str(_get(s, "responsible_attack", path), f"{path}.responsible_attack", allow_none=True)
    ratio = _opt_number(_get(s, "ratio_hidden_to_standard", path), f"{path}.ratio_hidden_to_standard", minimum=0.0)
    v = _get(s, "verdict", path)
    if v not in VERDICTS:
        raise AuditError(f"{path}.verdict must be one of {list(VERDICTS)}, got {v!r}")
    _str(_get(s, "verdict_reason", path), f"{path}.verdict_reason")
    closure_passed = _bool(_get(s, "closure_passed", path), f"{path}.closure_passed")
    n_sigma = _number(_get(s, "n_sigma", path), f"{path}.n_sigma", minimum=0.0)

    # Derived keys must agree with the attacks they summarise.
    exp_largest, exp_unc, _ = largest_hidden(attacks, candidates)
    if (largest is None) != (exp_largest is None) or (largest is not None and not _close(largest, exp_largest)):
        raise AuditError(
            f"{path}.largest_hidden_impact_mu is {largest!r} but the largest impact_mu among hidden candidate "
            f"attacks is {exp_largest!r}"
        )
    if (largest_unc is None) != (exp_unc is None) or (largest_unc is not None and not _close(largest_unc, exp_unc)):
        raise AuditError(f"{path}.largest_hidden_impact_mu_unc is {largest_unc!r}, expected {exp_unc!r}")
    if largest is None:
        if responsible is not None:
            raise AuditError(f"{path}.responsible_attack must be null when no attack is hidden, got {responsible!r}")
    else:
        if responsible not in candidates:
            raise AuditError(f"{path}.responsible_attack {responsible!r} is not one of the candidates {candidates}")
        if attacks[responsible]["hidden"] is not True or not _close(attacks[responsible]["impact_mu"], largest):
            raise AuditError(
                f"{path}.responsible_attack {responsible!r} is not a hidden attack with impact_mu = "
                f"largest_hidden_impact_mu ({largest!r})"
            )
    exp_ratio = largest / std if largest is not None and std > 0 else None
    if (ratio is None) != (exp_ratio is None) or (ratio is not None and not _close(ratio, exp_ratio)):
        raise AuditError(
            f"{path}.ratio_hidden_to_standard is {ratio!r} but largest_hidden_impact_mu / standard_impact_mu is "
            f"{exp_ratio!r} (null when there is no hidden attack or the standard impact is 0)"
        )
    diff_unc = _opt_number(s.get("difference_unc"), f"{path}.difference_unc", minimum=0.0)
    exp_verdict = decide(largest, largest_unc, std, std_unc, null_q, n_sigma=n_sigma,
                         difference_unc=diff_unc if largest is not None else None, closure_ok=closure_passed)
    if v != exp_verdict.verdict:
        raise AuditError(f"{path}.verdict is {v!r} but the impacts give {exp_verdict.verdict!r}")
    if "description" in s:
        _str(s["description"], f"{path}.description", nonempty=False)


def _validate_model(m, path: str) -> None:
    _mapping(m, path)
    _number(_get(m, "auc", path), f"{path}.auc", minimum=0.0, maximum=1.0)
    _number(_get(m, "expected_significance", path), f"{path}.expected_significance")
    penalty = _mapping(_get(m, "penalty", path), f"{path}.penalty")
    for k, lam in penalty.items():
        _number(lam, f"{path}.penalty.{k}", minimum=0.0)
    closure = _mapping(_get(m, "closure", path), f"{path}.closure")
    for key in ("pull_mean", "pull_width", "coverage_68"):
        _number(_get(closure, key, f"{path}.closure"), f"{path}.closure.{key}")
    _bool(_get(closure, "passed", f"{path}.closure"), f"{path}.closure.passed")
    calibration = _mapping(_get(m, "calibration", path), f"{path}.calibration")
    _number(_get(calibration, "false_alarm_rate", f"{path}.calibration"), f"{path}.calibration.false_alarm_rate",
            minimum=0.0, maximum=1.0)
    power_max = calibration.get("power_max")
    power_max = None if power_max is None else _number(power_max, f"{path}.calibration.power_max", minimum=0.0)
    systematics = _mapping(_get(m, "systematics", path), f"{path}.systematics", nonempty=True)
    for name, s in systematics.items():
        _validate_systematic(s, f"{path}.systematics.{name}", power_max)
    if "label" in m:
        _str(m["label"], f"{path}.label")
    if "description" in m:
        _str(m["description"], f"{path}.description", nonempty=False)


def _validate_relpath(p, path: str, suffix: str) -> None:
    _str(p, path)
    pp = PurePosixPath(p.replace("\\", "/"))
    if pp.is_absolute() or ".." in pp.parts or (len(p) > 1 and p[1] == ":"):
        raise AuditError(f"{path} must be a relative path inside the report folder, got {p!r}")
    if pp.suffix.lower() != suffix:
        raise AuditError(f"{path} must end in {suffix}, got {p!r}")


def validate_summary(summary) -> None:
    """Check ``summary`` against schema version 2 (docs/report.md); raise ``AuditError`` naming the key.

    Checks presence and type of every required key, finiteness and ranges of the numbers,
    the verdict vocabulary, that derived keys (largest hidden impact and its uncertainty,
    responsible attack, ratio, verdict) agree with the attacks, that ``hidden`` agrees with
    the power and the model's power limit, that figure names are unique and their paths
    relative, and that the whole object is JSON-serialisable without NaN/inf. Unknown extra
    keys are allowed.
    """
    _mapping(summary, "summary")
    sv = _get(summary, "schema_version", "summary")
    if isinstance(sv, bool) or sv != SCHEMA_VERSION:
        raise AuditError(f"summary.schema_version must be {SCHEMA_VERSION}, got {sv!r}")
    for key in ("tool_version", "config", "version"):
        _str(_get(summary, key, "summary"), f"summary.{key}")
    created = _str(_get(summary, "created", "summary"), "summary.created")
    try:
        _dt.datetime.fromisoformat(created)
    except ValueError:
        raise AuditError(f"summary.created must be an ISO 8601 time (e.g. 2026-01-31T12:00:00+00:00), got {created!r}") from None
    models = _mapping(_get(summary, "models", "summary"), "summary.models", nonempty=True)
    for name, m in models.items():
        _validate_model(m, f"summary.models.{name}")
    figures = _list(_get(summary, "figures", "summary"), "summary.figures")
    seen = set()
    for i, f in enumerate(figures):
        path = f"summary.figures[{i}]"
        _mapping(f, path)
        name = _str(_get(f, "name", path), f"{path}.name")
        if name in seen:
            raise AuditError(f"{path}.name {name!r} is used by two figures; figure names must be unique")
        seen.add(name)
        _validate_relpath(_get(f, "png", path), f"{path}.png", ".png")
        _validate_relpath(_get(f, "pdf", path), f"{path}.pdf", ".pdf")
        _str(_get(f, "caption", path), f"{path}.caption", nonempty=False)
    if "title" in summary:
        _str(summary["title"], "summary.title")
    if "notes" in summary:
        for i, n in enumerate(_list(summary["notes"], "summary.notes")):
            _str(n, f"summary.notes[{i}]")
    try:
        json.dumps(summary, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"summary is not JSON-serialisable ({exc}); convert numpy values with make_summary") from None


# --------------------------------------------------------------------------- I/O


def _atomic_write(path, data: bytes) -> Path:
    return write_atomically(path, lambda fh: fh.write(data))


def write_summary(summary: Mapping, path) -> Path:
    """Validate and write ``summary`` as indented JSON, atomically (temp file + rename)."""
    summary = to_json(summary)
    validate_summary(summary)
    return _atomic_write(path, (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode())


def load_summary(path) -> dict:
    """Read and validate a summary.json."""
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise AuditError(f"summary file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise AuditError(f"summary file {path} is not valid JSON ({exc})") from None
    validate_summary(summary)
    return summary


# --------------------------------------------------------------------------- console


def _fmt(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _pm(value, unc, spec: str = ".3f") -> str:
    return "-" if value is None else f"{value:{spec}}+-{unc:{spec}}"


def _shown_attack(s: Mapping) -> str | None:
    """The attack a row reports: the responsible one, else the candidate with the largest
    impact (it was visible)."""
    if s["responsible_attack"] is not None:
        return s["responsible_attack"]
    pool = [a for a in s["candidates"] if a in s["attacks"]] or list(s["attacks"])
    return max(pool, key=lambda a: s["attacks"][a]["impact_mu"]) if pool else None


def _unc_parts(attack: Mapping | None) -> str:
    """'MC / seeds' parts of an attack impact's uncertainty ('-' for no seed part)."""
    if not attack or "impact_parts" not in attack:
        return "-"
    parts = attack["impact_parts"]
    seeds = f"{parts.get('attack_seeds', 0.0):.3f}" if attack.get("attack_seeds") else "-"
    return f"{parts['mc_stat']:.3f} / {seeds}"


def _penalty_text(penalty: Mapping) -> str:
    return ", ".join(f"{k}: {v:g}" for k, v in penalty.items()) if penalty else "none"


def console_table(summary: Mapping) -> str:
    """A short fixed-width table per model: systematic, quoted impact +- uncertainty, the
    power of the standard shift, the largest hidden impact +- uncertainty, the attack and its
    power, the random control's hidden rate and null quantile, the verdict. An attack in
    parentheses is the strongest candidate tried; data would have seen it."""
    validate_summary(summary)
    lines = [
        f"Hidden-systematics audit  config={summary['config']}  version={summary['version']}  "
        f"created={summary['created']}"
    ]
    for mname, m in summary["models"].items():
        syst = m["systematics"]
        w_s = max(10, *(len(s) for s in syst))
        shown = {s: _shown_attack(e) for s, e in syst.items()}
        w_a = max(6, *(len(a) + 2 for a in shown.values() if a), 0)
        header = (
            f"{'systematic':<{w_s}}  {'quoted':>13}  {'std power':>9}  {'hidden':>13}  {'mc / seeds':>13}  "
            f"{'attack':<{w_a}}  "
            f"{'power':>5}  {'null q95':>8}  {'control':>7}  verdict"
        )
        c = m["closure"]
        cal = m["calibration"]
        lines.append("")
        lines.append(
            f"Model {mname}: AUC {m['auc']:.3f}, expected significance {m['expected_significance']:.2f}, "
            f"penalty {_penalty_text(m['penalty'])}"
        )
        lines.append(
            f"  closure of nominal toys: pull mean {c['pull_mean']:.3f}, width {c['pull_width']:.3f}, "
            f"68% coverage {c['coverage_68']:.3f} ({'passed' if c['passed'] else 'FAILED'}); visibility test: "
            f"false-alarm rate {cal['false_alarm_rate']:.3f}+-{cal['false_alarm_unc']:.3f} at alpha {cal['alpha']:g}"
        )
        lines.append(header)
        lines.append("-" * len(header.expandtabs()) + "-" * 24)
        for sname, e in syst.items():
            a = shown[sname]
            att = e["attacks"].get(a) if a else None
            a_txt = "-" if a is None else (a if e["responsible_attack"] else f"({a})")
            flag = "  <-- !" if e["verdict"] == LARGER else ""
            sp = e["standard_power"]
            lines.append(
                f"{sname:<{w_s}}  {_pm(e['standard_impact_mu'], e['standard_impact_mu_unc']):>13}  "
                f"{max(sp['up'], sp['down']):>9.2f}  "
                f"{_pm(e['largest_hidden_impact_mu'], e['largest_hidden_impact_mu_unc']):>13}  "
                f"{_unc_parts(att if e['responsible_attack'] else None):>13}  {a_txt:<{w_a}}  "
                f"{_fmt(att['power'] if att else None, '.2f'):>5}  {e['null']['quantile_95']:>8.3f}  "
                f"{e['null']['hidden_rate']:>7.2f}  {e['verdict']}{flag}"
            )
    lines.append("")
    lines.append("quoted: the systematic's impact on mu; hidden: the largest impact on mu of an attack that data would "
                 "not see (power <= limit), +- MC statistics (quoted) and MC statistics and attack-seed spread in "
                 "quadrature (hidden; mc / seeds: the two parts, '-' for a deterministic attack); "
                 "std power: how often data would see the standard "
                 "+-1 sigma shift; null q95 / control: random control's impact quantile and hidden rate")
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#1d1d1d;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;vertical-align:top}
th{background:#f2f2f2}td.name,th.name{text-align:left}
.meta td,.meta th{text-align:left;border:none;padding:.1em .8em .1em 0}
.verdict{font-weight:bold;text-align:left;white-space:nowrap}
.v-covered{background:#dff3e0;color:#185c1f}.v-hidden{background:#fbdcd7;color:#8a1404}
.v-none{background:#eeeeee;color:#555}
.pass{color:#185c1f}.fail{color:#8a1404;font-weight:bold}
details{text-align:left}details table{font-size:.85em;margin:.4em 0}
summary{cursor:pointer;white-space:nowrap}details[open]{min-width:38em}
figure{margin:1.5em 0;padding:1em;border:1px solid #e3e3e3;border-radius:4px}
figure img{max-width:100%;height:auto;display:block;margin:auto}
figcaption{margin-top:.6em;font-size:.92em}
.small{font-size:.85em;color:#555}
"""

_VERDICT_CLASS = {COVERED: "v-covered", LARGER: "v-hidden", INCONCLUSIVE: "v-none"}


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _attack_details(s: Mapping) -> str:
    parts = [f"<p><b>Verdict</b>: {_e(s['verdict_reason'])}</p>"]
    sp = s["standard_power"]
    parts.append(
        f"<p>Quoted impact on &mu; {_pm(s['standard_impact_mu'], s['standard_impact_mu_unc'])} (MC statistics); "
        f"power of the standard shift in data: up {sp['up']:.2f}, down {sp['down']:.2f}.</p>")
    null = s["null"]
    parts.append(
        f"<p>Random control over {null['n_seeds']} seeds: hidden in {null['hidden_rate']:.2f} of them; "
        f"the {100 * null.get('quantile', 0.95):.0f}% quantile of the largest of {null['n_attacks_compared']} "
        f"null impacts (the look-elsewhere comparison) is {null['quantile_95']:.3f}.</p>")
    std = s["standard"]
    parts.append("<p><b>Standard &plusmn;1&sigma; toys</b> (fitted with the nominal model)</p><table><tr>"
                 "<th class=name>shift</th><th>bias</th><th>pull mean</th><th>pull width</th><th>coverage</th></tr>")
    for d in ("up", "down"):
        r = std[d]
        parts.append(f"<tr><td class=name>{d}</td><td>{_fmt(r['bias'])}</td><td>{_fmt(r['pull_mean'])}</td>"
                     f"<td>{_fmt(r['pull_width'])}</td><td>{_fmt(r['coverage'])}</td></tr>")
    parts.append("</table>")
    cmp = s.get("output_shift_comparison")
    if cmp:
        parts.append(
            "<p>Signal-region NN-output shift (Wasserstein-1 distance): standard &plusmn;1&sigma; "
            f"{_fmt(cmp['standard_wasserstein'], '.4g')}, largest hidden attack "
            f"{_fmt(cmp['largest_hidden_wasserstein'], '.4g')} ({_e(cmp['attack'] or '-')}): "
            + ("<b>a hidden attack moves the output more than the standard shift</b>"
               if cmp["hidden_exceeds_standard"] else "no hidden attack moves it more") + "</p>")
    parts.append("<table><tr><th class=name>attack</th><th class=name>hidden</th><th>power</th>"
                 "<th class=name>most visible look</th><th>impact on &mu;</th><th>MC statistics</th>"
                 "<th>attack seeds (spread, n)</th><th>toys cross-check</th>"
                 "<th>fooling ratio</th><th>published checks passed</th></tr>")
    for aname, a in s["attacks"].items():
        role = "" if aname in s["candidates"] else " (control)"
        toys = _pm(a.get("impact_mu_toys"), a.get("impact_mu_toys_unc", 0.0)) if "impact_mu_toys" in a else "-"
        parts.append(
            f"<tr><td class=name>{_e(aname)}{role}</td><td class=name>{'yes' if a['hidden'] else 'no'}</td>"
            f"<td>{a['power']:.3f}&plusmn;{a['power_unc']:.3f}</td><td class=name>{_e(a.get('most_visible_look') or '-')}</td>"
            f"<td>{_pm(a['impact_mu'], a['impact_mu_unc'])}</td><td>{_seed_cells(a)}</td><td>{toys}</td>"
            f"<td>{_fmt(a['fooling_ratio'])}</td><td>{_e(a.get('published_passed', '-'))}</td></tr>")
    parts.append("</table>")
    for aname, a in s["attacks"].items():
        if not a["published"]:
            continue
        failed = [c for c in a["published"] if not c["passed"]]
        parts.append(f"<p class=small><b>{_e(aname)}</b>: published statistics failing their thresholds "
                     f"({len(failed)} of {len(a['published'])}; reported, not deciding)</p>")
        if failed:
            parts.append("<table><tr><th class=name>statistic</th><th class=name>region</th><th class=name>feature</th>"
                         "<th>value</th><th>threshold</th></tr>")
            for c in failed[:20]:
                parts.append(
                    f"<tr><td class=name>{_e(c['name'])}</td><td class=name>{_e(c['region'])}</td>"
                    f"<td class=name>{_e(c['feature'] if c['feature'] is not None else '-')}</td>"
                    f"<td>{_fmt(c['statistic'], '.4g')}</td><td>{_fmt(c['threshold'], '.4g')}</td></tr>")
            parts.append("</table>")
    return "".join(parts)


def _seed_cells(a: Mapping) -> str:
    """The MC-statistics and attack-seed cells of an attack row."""
    parts = a.get("impact_parts") or {}
    mc = _fmt(parts.get("mc_stat"), ".3f")
    n = a.get("attack_seeds", 0)
    if n:
        seeds = f"{parts.get('attack_seeds', 0.0):.3f} ({n} seeds)"
    else:
        seeds = "- (not rerun)" if a.get("stochastic") else "- (deterministic)"
    return f"{mc}</td><td>{seeds}"


def _model_table(mname: str, m: Mapping) -> str:
    rows = []
    for sname, s in m["systematics"].items():
        a = _shown_attack(s)
        att = s["attacks"].get(a) if a else None
        a_txt = "-" if a is None else (_e(a) if s["responsible_attack"] else f"({_e(a)})")
        v = s["verdict"]
        rows.append(
            f'<tr id="{_e(_slug(mname))}--{_e(_slug(sname))}"><td class=name>{_e(sname)}</td>'
            f"<td>{_pm(s['standard_impact_mu'], s['standard_impact_mu_unc'])}</td>"
            f"<td>{max(s['standard_power']['up'], s['standard_power']['down']):.2f}</td>"
            f"<td>{_pm(s['largest_hidden_impact_mu'], s['largest_hidden_impact_mu_unc'])}</td>"
            f"<td class=name>{a_txt}</td><td>{_fmt(att['power'] if att else None, '.2f')}</td>"
            f"<td>{s['null']['quantile_95']:.3f}</td>"
            f"<td><details><summary>details</summary>{_attack_details(s)}</details></td>"
            f'<td class="verdict {_VERDICT_CLASS[v]}">{_e(v)}</td></tr>'
        )
    c, cal = m["closure"], m["calibration"]
    return (
        f'<h3 id="model-{_e(_slug(mname))}">Model {_e(m.get("label", mname))}</h3>'
        f"<p class=small>AUC {m['auc']:.3f}; expected significance {m['expected_significance']:.2f}; "
        f"penalty &lambda;: {_e(_penalty_text(m['penalty']))}</p>"
        f"<p class=small>Closure of the nominal toys: pull mean {c['pull_mean']:.3f}, pull width "
        f"{c['pull_width']:.3f}, 68% coverage {c['coverage_68']:.3f}: "
        + ('<span class="pass">passed</span>' if c["passed"] else '<span class="fail">FAILED: no verdict of this '
                                                                    'model can be covered or larger</span>')
        + f". Visibility test at &alpha; = {cal['alpha']:g}: false-alarm rate on independent pseudo-data "
        f"{cal['false_alarm_rate']:.3f}&plusmn;{cal['false_alarm_unc']:.3f} over {cal['n_looks']} looks.</p>"
        "<table><tr><th class=name>systematic</th><th>quoted impact on &mu;</th><th>power of the standard shift</th>"
        "<th>largest hidden impact on &mu;</th><th class=name>attack</th><th>its power</th>"
        "<th>null 95% quantile</th><th>details</th><th class=name>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _comparison_table(models: Mapping) -> str:
    rows = []
    for mname, m in models.items():
        syst = m["systematics"].values()
        hidden = [s["largest_hidden_impact_mu"] for s in syst if s["largest_hidden_impact_mu"] is not None]
        n_larger = sum(s["verdict"] == LARGER for s in syst)
        rows.append(
            f"<tr><td class=name><a href=\"#model-{_e(_slug(mname))}\">{_e(m.get('label', mname))}</a></td>"
            f"<td class=name>{_e(_penalty_text(m['penalty']))}</td><td>{m['auc']:.3f}</td>"
            f"<td>{m['expected_significance']:.2f}</td>"
            f"<td>{_fmt(max(s['standard_impact_mu'] for s in syst))}</td>"
            f"<td>{_fmt(max(hidden) if hidden else None)}</td>"
            f"<td class=\"{'fail' if n_larger else 'pass'}\">{n_larger} / {len(m['systematics'])}</td></tr>"
        )
    return (
        "<table><tr><th class=name>model</th><th class=name>penalty &lambda;</th><th>AUC</th>"
        "<th>expected significance</th><th>largest quoted impact</th><th>largest hidden impact</th>"
        "<th>systematics with hidden &gt; quoted</th></tr>" + "".join(rows) + "</table>"
    )


def _figure_html(f: Mapping, figures_dir: Path) -> str:
    png = figures_dir / f["png"]
    try:
        data = png.read_bytes()
    except FileNotFoundError:
        raise AuditError(f"figure {f['name']!r}: PNG {png} does not exist; write the figures before the report") from None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise AuditError(f"figure {f['name']!r}: {png} is not a PNG file")
    b64 = base64.b64encode(data).decode("ascii")
    return (
        f'<figure id="fig-{_e(_slug(f["name"]))}" data-name="{_e(f["name"])}">'
        f'<img alt="{_e(f["name"])}" src="data:image/png;base64,{b64}">'
        f"<figcaption><b>{_e(f['name'])}</b>: {_e(f['caption'])} "
        f"<span class=small>(PDF: {_e(f['pdf'])})</span></figcaption></figure>"
    )


def render_html(summary: Mapping, figures_dir) -> str:
    """The report as one HTML string (see ``write_html``)."""
    validate_summary(summary)
    figures_dir = Path(figures_dir)
    title = summary.get("title", "Hidden-systematics audit")
    body = [
        f"<header><h1>{_e(title)}</h1><table class=meta>"
        f"<tr><th>config</th><td>{_e(summary['config'])}</td></tr>"
        f"<tr><th>version</th><td>{_e(summary['version'])}</td></tr>"
        f"<tr><th>created</th><td>{_e(summary['created'])}</td></tr>"
        f"<tr><th>tool version</th><td>{_e(summary['tool_version'])}</td></tr>"
        f"<tr><th>summary schema</th><td>{summary['schema_version']}</td></tr></table></header>",
        "<p class=small>Per systematic: the <b>quoted impact</b> is the systematic's impact on &mu; (its "
        "nuisance parameter fixed at the post-fit &plusmn;1&sigma;); the <b>largest hidden impact</b> is the largest "
        "bias on &mu; among attacks inside the systematic's envelope that data at the analysis luminosity would "
        "see with a probability (power) of at most the configured limit; both on expected data with the nominal "
        "model, &plusmn; MC statistics from bootstrap replicas (for an attack whose result depends on its seed, "
        "the spread of its impact over attack seeds is added in quadrature). Verdicts: "
        f'<span class="verdict v-hidden">{LARGER}</span> (hidden exceeds quoted by more than n&sigma; and the '
        "random-control null), "
        f'<span class="verdict v-covered">{COVERED}</span> (hidden + n&sigma; below quoted), '
        f'<span class="verdict v-none">{INCONCLUSIVE}</span> (the MC statistics cannot decide; the reason '
        "says by how much more simulation would). Click details for the powers, the null and the published "
        "statistics. See docs/report.md.</p>",
    ]
    if summary.get("notes"):
        body.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in summary["notes"]) + "</ul>")
    if summary.get("inputs"):
        rows = "".join(
            f"<tr><td class=name>{_e(d)}</td><td>{i['n_selected']}</td><td>{_fmt(i['yield'], '.4g')}</td>"
            f"<td>{_fmt(i['effective_sample_size'], '.4g')}</td><td>{_fmt(i['max_weight_share'], '.3g')}</td>"
            f"<td class=name>{_e('; '.join(i['problems']) or 'none')}</td></tr>"
            for d, i in summary["inputs"].items())
        body.append('<h2 id="inputs">Inputs</h2><table><tr><th class=name>dataset</th><th>selected events</th>'
                    "<th>yield</th><th>effective MC events</th><th>largest weight share</th>"
                    f"<th class=name>weight problems</th></tr>{rows}</table>")
    body.append('<h2 id="results">Results per model</h2>')
    for mname, m in summary["models"].items():
        body.append(_model_table(mname, m))
    body.append('<h2 id="comparison">Model comparison: performance vs robustness</h2>')
    body.append(_comparison_table(summary["models"]))
    body.append('<h2 id="figures">Figures</h2>')
    if not summary["figures"]:
        body.append("<p class=small>No figures.</p>")
    for f in summary["figures"]:
        body.append(_figure_html(f, figures_dir))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}: {_e(summary['config'])} / {_e(summary['version'])}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_html(summary: Mapping, figures_dir, path) -> Path:
    """Write the self-contained HTML report atomically; return its path.

    ``figures_dir`` is the folder the figure paths in ``summary["figures"]`` are relative to
    (normally the report folder). Every figure's PNG is embedded as a base64 data URI; the CSS
    is inline; there are no scripts and no links to other files, so the file opens offline
    and can be mailed on its own. Contents: header (config, version, date), the central table
    per model with a checks expander per systematic, the model comparison, every figure with
    its caption.
    """
    text = render_html(to_json(summary), figures_dir)
    return _atomic_write(path, text.encode("utf-8"))
