"""The audit report: ``summary.json`` (schema version 1), a console table and one HTML file.

The audit (issue 6) asks, per model variant and systematic: is the largest mismodelling that
stays inside the systematic's +-1 sigma envelope and passes every hidden-ness check (a
*hidden systematic*, ../shared/SCIENCE.md sections 1 and 4) larger in its effect on the signal
strength mu than the standard +-1 sigma variation that the analysis quotes? This module holds
the answer's data model and presentation, independent of how the numbers are computed:

``verdict`` / ``largest_hidden`` / ``systematic_entry``   the decision rule and derived keys;
``make_summary`` / ``validate_summary``                   build and check the versioned schema
                                                          (documented in docs/report.md);
``write_summary`` / ``load_summary``                      atomic JSON I/O (validated);
``console_table``                                         the short fixed-width table printed at
                                                          the end of ``law run AttackAudit``;
``write_html``                                            one self-contained HTML report (inline
                                                          CSS, figures as base64 PNG data URIs,
                                                          no scripts, no external resources).

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

from analysis.errors import AuditError
from analysis.files import write_atomically

SCHEMA_VERSION = 1

COVERED = "covered"
HIDDEN_LARGER = "hidden systematic larger than quoted"
NO_HIDDEN = "no hidden attack found"
VERDICTS = (COVERED, HIDDEN_LARGER, NO_HIDDEN)

_REL_TOL = 1e-9


# --------------------------------------------------------------------------- decision rule


def verdict(standard_impact: float, hidden_impacts: Iterable[float | None]) -> str:
    """The verdict for one systematic.

    ``hidden_impacts``: |impact on mu| of the attacks that passed every check (None entries are
    ignored). No such attack -> "no hidden attack found"; the largest one strictly above the
    standard impact -> "hidden systematic larger than quoted"; otherwise "covered".
    """
    std = _number(standard_impact, "standard_impact", minimum=0.0)
    impacts = [_number(h, f"hidden_impacts[{i}]", minimum=0.0) for i, h in enumerate(hidden_impacts) if h is not None]
    if not impacts:
        return NO_HIDDEN
    return HIDDEN_LARGER if max(impacts) > std else COVERED


def largest_hidden(attacks: Mapping[str, Mapping]) -> tuple[float | None, str | None]:
    """(largest impact_mu, attack name) among attacks with ``hidden`` true; (None, None) if none.

    Ties go to the first attack in the mapping's order.
    """
    best, name = None, None
    for attack, entry in attacks.items():
        if entry.get("hidden") is True:
            impact = float(entry["impact_mu"])
            if best is None or impact > best:
                best, name = impact, attack
    return best, name


def systematic_entry(standard_impact_mu: float, standard: Mapping, attacks: Mapping[str, Mapping], **optional) -> dict:
    """One ``systematics[SYST]`` entry with the derived keys filled in.

    ``standard``: ``{"up": {"bias", "pull_mean", "pull_width", "coverage"}, "down": {...}}``;
    ``attacks``: ``{ATTACK: {"hidden", "impact_mu", "fooling_ratio", "checks", "metrics"}}``.
    Adds ``largest_hidden_impact_mu``, ``responsible_attack``, ``ratio_hidden_to_standard``
    (None when there is no hidden attack or the standard impact is 0) and ``verdict``.
    ``optional`` keys (e.g. ``description``) are copied as they are.
    """
    std = _number(standard_impact_mu, "standard_impact_mu", minimum=0.0)
    attacks = {a: dict(e) for a, e in attacks.items()}
    for a, e in attacks.items():
        if "hidden" not in e or "impact_mu" not in e:
            raise AuditError(f"attack {a!r} needs 'hidden' and 'impact_mu' to summarise it")
    largest, responsible = largest_hidden(attacks)
    entry = dict(optional)
    if entry.get("control_impact_mu") is not None:
        # a hidden impact below the random control's is within the MC-statistics noise floor
        entry["largest_hidden_exceeds_control"] = bool(largest is not None
                                                       and largest > float(entry["control_impact_mu"]))
    if "standard_output_shift" in entry:
        entry["output_shift_comparison"] = output_shift_comparison(entry["standard_output_shift"], attacks)
    entry.update(
        standard_impact_mu=std,
        standard={d: dict(v) for d, v in standard.items()},
        attacks=attacks,
        largest_hidden_impact_mu=largest,
        responsible_attack=responsible,
        ratio_hidden_to_standard=(largest / std if largest is not None and std > 0 else None),
        verdict=verdict(std, [largest]),
    )
    return _jsonable(entry)


def output_shift_comparison(standard_shift: Mapping, attacks: Mapping[str, Mapping]) -> dict:
    """Does a hidden attack move the signal-region NN-output distribution more than the
    standard +-1 sigma shift? Compared in Wasserstein-1 distance (the attacks' metric
    ``output_shift_wasserstein``; the standard's larger of up and down)."""
    standard = max(float(v.get("wasserstein", 0.0)) for v in standard_shift.values())
    hidden = {a: float(e["metrics"]["output_shift_wasserstein"]) for a, e in attacks.items()
              if e["hidden"] and "output_shift_wasserstein" in (e.get("metrics") or {})}
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
    summary = _jsonable(summary)
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


def _validate_attack(a, path: str) -> None:
    _mapping(a, path)
    hidden = _bool(_get(a, "hidden", path), f"{path}.hidden")
    _number(_get(a, "impact_mu", path), f"{path}.impact_mu", minimum=0.0)
    _number(_get(a, "fooling_ratio", path), f"{path}.fooling_ratio", minimum=0.0, maximum=1.0)
    checks = _list(_get(a, "checks", path), f"{path}.checks")
    passed = [_validate_check(c, f"{path}.checks[{i}]") for i, c in enumerate(checks)]
    metrics = _mapping(_get(a, "metrics", path), f"{path}.metrics")
    for k, v in metrics.items():
        _number(v, f"{path}.metrics.{k}")
    if hidden and not checks:
        raise AuditError(f"{path}.hidden is true but the attack has no checks; hidden means it passed every check")
    if hidden and not all(passed):
        failed = [checks[i]["name"] for i, p in enumerate(passed) if not p]
        raise AuditError(f"{path}.hidden is true but check(s) {failed} failed; hidden means it passed every check")
    if "settings" in a:
        _mapping(a["settings"], f"{path}.settings")
    if "description" in a:
        _str(a["description"], f"{path}.description", nonempty=False)


def _validate_systematic(s, path: str) -> None:
    _mapping(s, path)
    std = _number(_get(s, "standard_impact_mu", path), f"{path}.standard_impact_mu", minimum=0.0)
    standard = _mapping(_get(s, "standard", path), f"{path}.standard")
    for direction in ("up", "down"):
        _validate_direction(_get(standard, direction, f"{path}.standard"), f"{path}.standard.{direction}")
    attacks = _mapping(_get(s, "attacks", path), f"{path}.attacks")
    for name, a in attacks.items():
        _validate_attack(a, f"{path}.attacks.{name}")
    largest = _opt_number(_get(s, "largest_hidden_impact_mu", path), f"{path}.largest_hidden_impact_mu", minimum=0.0)
    responsible = _str(_get(s, "responsible_attack", path), f"{path}.responsible_attack", allow_none=True)
    ratio = _opt_number(_get(s, "ratio_hidden_to_standard", path), f"{path}.ratio_hidden_to_standard", minimum=0.0)
    v = _get(s, "verdict", path)
    if v not in VERDICTS:
        raise AuditError(f"{path}.verdict must be one of {list(VERDICTS)}, got {v!r}")

    # Derived keys must agree with the attacks they summarise.
    exp_largest, _ = largest_hidden(attacks)
    if (largest is None) != (exp_largest is None) or (largest is not None and not _close(largest, exp_largest)):
        raise AuditError(
            f"{path}.largest_hidden_impact_mu is {largest!r} but the largest impact_mu among hidden attacks is "
            f"{exp_largest!r}"
        )
    if largest is None:
        if responsible is not None:
            raise AuditError(f"{path}.responsible_attack must be null when no attack is hidden, got {responsible!r}")
    else:
        if responsible not in attacks:
            raise AuditError(f"{path}.responsible_attack {responsible!r} is not one of the attacks {sorted(attacks)}")
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
    exp_verdict = verdict(std, [largest])
    if v != exp_verdict:
        raise AuditError(f"{path}.verdict is {v!r} but the impacts give {exp_verdict!r}")
    if "description" in s:
        _str(s["description"], f"{path}.description", nonempty=False)


def _validate_model(m, path: str) -> None:
    _mapping(m, path)
    _number(_get(m, "auc", path), f"{path}.auc", minimum=0.0, maximum=1.0)
    _number(_get(m, "expected_significance", path), f"{path}.expected_significance")
    penalty = _mapping(_get(m, "penalty", path), f"{path}.penalty")
    for k, lam in penalty.items():
        _number(lam, f"{path}.penalty.{k}", minimum=0.0)
    systematics = _mapping(_get(m, "systematics", path), f"{path}.systematics", nonempty=True)
    for name, s in systematics.items():
        _validate_systematic(s, f"{path}.systematics.{name}")
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
    """Check ``summary`` against schema version 1 (docs/report.md); raise ``AuditError`` naming the key.

    Checks presence and type of every required key, finiteness and ranges of the numbers,
    the verdict vocabulary, that derived keys (largest hidden impact, responsible attack,
    ratio, verdict) agree with the attacks, that a hidden attack passed every one of its
    checks, that figure names are unique and their paths relative, and that the whole object
    is JSON-serialisable without NaN/inf. Unknown extra keys are allowed.
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


def _jsonable(x):
    """Plain Python containers and numbers (numpy scalars/arrays converted)."""
    if isinstance(x, Mapping):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, str):  # numpy scalars and arrays
        return _jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    return x


def _atomic_write(path, data: bytes) -> Path:
    return write_atomically(path, lambda fh: fh.write(data))


def write_summary(summary: Mapping, path) -> Path:
    """Validate and write ``summary`` as indented JSON, atomically (temp file + rename)."""
    summary = _jsonable(summary)
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


def _checks_passed(attack: Mapping | None) -> str:
    if attack is None:
        return "-"
    checks = attack["checks"]
    return f"{sum(bool(c['passed']) for c in checks)}/{len(checks)}"


def _shown_attack(s: Mapping) -> str | None:
    """The attack a row reports: the responsible one, else the one with the largest impact."""
    if s["responsible_attack"] is not None:
        return s["responsible_attack"]
    if s["attacks"]:
        return max(s["attacks"], key=lambda a: s["attacks"][a]["impact_mu"])
    return None


def _penalty_text(penalty: Mapping) -> str:
    return ", ".join(f"{k}: {v:g}" for k, v in penalty.items()) if penalty else "none"


def console_table(summary: Mapping) -> str:
    """A short fixed-width table per model (systematic, standard impact, largest hidden impact,
    ratio, attack, fooling ratio, verdict). An attack in parentheses is the strongest one that
    failed a check (shown when no attack is hidden)."""
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
            f"{'systematic':<{w_s}}  {'standard':>9}  {'hidden':>9}  {'ratio':>6}  {'attack':<{w_a}}  "
            f"{'fooling':>7}  {'checks':>6}  verdict"
        )
        lines.append("")
        lines.append(
            f"Model {mname}: AUC {m['auc']:.3f}, expected significance {m['expected_significance']:.2f}, "
            f"penalty {_penalty_text(m['penalty'])}"
        )
        lines.append(header)
        lines.append("-" * len(header.expandtabs()) + "-" * 30)
        for sname, e in syst.items():
            a = shown[sname]
            att = e["attacks"].get(a) if a else None
            a_txt = "-" if a is None else (a if e["responsible_attack"] else f"({a})")
            flag = "  <-- !" if e["verdict"] == HIDDEN_LARGER else ""
            lines.append(
                f"{sname:<{w_s}}  {_fmt(e['standard_impact_mu']):>9}  {_fmt(e['largest_hidden_impact_mu']):>9}  "
                f"{_fmt(e['ratio_hidden_to_standard'], '.2f'):>6}  {a_txt:<{w_a}}  "
                f"{_fmt(att['fooling_ratio'] if att else None, '.3f'):>7}  {_checks_passed(att):>6}  "
                f"{e['verdict']}{flag}"
            )
    lines.append("")
    lines.append("standard / hidden: |bias on mu| of the quoted +-1 sigma shift / of the largest attack that passed "
                 "every check; (attack): strongest attack tried, it failed a check")
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

_VERDICT_CLASS = {COVERED: "v-covered", HIDDEN_LARGER: "v-hidden", NO_HIDDEN: "v-none"}


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _attack_details(s: Mapping) -> str:
    parts = []
    std = s["standard"]
    parts.append("<p><b>Standard &plusmn;1&sigma; toys</b></p><table><tr><th class=name>shift</th>"
                 "<th>bias</th><th>pull mean</th><th>pull width</th><th>coverage</th></tr>")
    for d in ("up", "down"):
        r = std[d]
        parts.append(f"<tr><td class=name>{d}</td><td>{_fmt(r['bias'])}</td><td>{_fmt(r['pull_mean'])}</td>"
                     f"<td>{_fmt(r['pull_width'])}</td><td>{_fmt(r['coverage'])}</td></tr>")
    parts.append("</table>")
    if s.get("control_impact_mu") is not None:
        parts.append(f"<p>Impact of the random control attack on &mu; (the noise floor of attack impacts from "
                     f"MC statistics): {_fmt(s['control_impact_mu'])}; largest hidden impact above it: "
                     f"{'yes' if s.get('largest_hidden_exceeds_control') else 'no'}</p>")
    cmp = s.get("output_shift_comparison")
    if cmp:
        parts.append(
            "<p>Signal-region NN-output shift (Wasserstein-1 distance): standard &plusmn;1&sigma; "
            f"{_fmt(cmp['standard_wasserstein'], '.4g')}, largest hidden attack "
            f"{_fmt(cmp['largest_hidden_wasserstein'], '.4g')} ({_e(cmp['attack'] or '-')}): "
            + ("<b>a hidden attack moves the output more than the standard shift</b>"
               if cmp["hidden_exceeds_standard"] else "no hidden attack moves it more") + "</p>")
    for aname, a in s["attacks"].items():
        status = "hidden" if a["hidden"] else "not hidden"
        parts.append(
            f"<p><b>{_e(aname)}</b>: {status}, impact on &mu; {_fmt(a['impact_mu'])}, "
            f"fooling ratio {_fmt(a['fooling_ratio'])}, checks passed {_checks_passed(a)}</p>"
        )
        if a["checks"]:
            parts.append("<table><tr><th class=name>check</th><th class=name>region</th><th class=name>feature</th>"
                         "<th>statistic</th><th>threshold</th><th class=name>result</th></tr>")
            for c in a["checks"]:
                res = '<span class="pass">passed</span>' if c["passed"] else '<span class="fail">FAILED</span>'
                parts.append(
                    f"<tr><td class=name>{_e(c['name'])}</td><td class=name>{_e(c['region'])}</td>"
                    f"<td class=name>{_e(c['feature'] if c['feature'] is not None else '-')}</td>"
                    f"<td>{_fmt(c['statistic'], '.4g')}</td><td>{_fmt(c['threshold'], '.4g')}</td>"
                    f"<td class=name>{res}</td></tr>"
                )
            parts.append("</table>")
        if a["metrics"]:
            parts.append("<p class=small>metrics: " + ", ".join(f"{_e(k)} = {_fmt(v, '.4g')}"
                                                              for k, v in a["metrics"].items()) + "</p>")
    return "".join(parts)


def _model_table(mname: str, m: Mapping) -> str:
    rows = []
    for sname, s in m["systematics"].items():
        a = _shown_attack(s)
        att = s["attacks"].get(a) if a else None
        a_txt = "-" if a is None else (_e(a) if s["responsible_attack"] else f"({_e(a)})")
        v = s["verdict"]
        rows.append(
            f'<tr id="{_e(_slug(mname))}--{_e(_slug(sname))}"><td class=name>{_e(sname)}</td>'
            f"<td>{_fmt(s['standard_impact_mu'])}</td><td>{_fmt(s['largest_hidden_impact_mu'])}</td>"
            f"<td>{_fmt(s['ratio_hidden_to_standard'], '.2f')}</td><td class=name>{a_txt}</td>"
            f"<td>{_fmt(att['fooling_ratio'] if att else None, '.3f')}</td>"
            f"<td><details><summary>{_checks_passed(att)}</summary>{_attack_details(s)}</details></td>"
            f'<td class="verdict {_VERDICT_CLASS[v]}">{_e(v)}</td></tr>'
        )
    return (
        f'<h3 id="model-{_e(_slug(mname))}">Model {_e(m.get("label", mname))}</h3>'
        f"<p class=small>AUC {m['auc']:.3f}; expected significance {m['expected_significance']:.2f}; "
        f"penalty &lambda;: {_e(_penalty_text(m['penalty']))}</p>"
        "<table><tr><th class=name>systematic</th><th>standard impact on &mu;</th>"
        "<th>largest hidden impact on &mu;</th><th>ratio hidden / standard</th><th class=name>attack</th>"
        "<th>fooling ratio</th><th>checks passed</th><th class=name>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _comparison_table(models: Mapping) -> str:
    rows = []
    for mname, m in models.items():
        syst = m["systematics"].values()
        hidden = [s["largest_hidden_impact_mu"] for s in syst if s["largest_hidden_impact_mu"] is not None]
        n_larger = sum(s["verdict"] == HIDDEN_LARGER for s in syst)
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
        "<th>expected significance</th><th>largest standard impact</th><th>largest hidden impact</th>"
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
        "<p class=small>Per systematic: the <b>standard impact</b> is |bias on &mu;| of the quoted &plusmn;1&sigma; "
        "variation (larger of up/down); the <b>largest hidden impact</b> is the largest |bias on &mu;| among "
        "attacks inside the systematic's envelope that passed <i>every</i> check. Verdicts: "
        f'<span class="verdict v-covered">{COVERED}</span> (hidden &le; standard), '
        f'<span class="verdict v-hidden">{HIDDEN_LARGER}</span>, '
        f'<span class="verdict v-none">{NO_HIDDEN}</span>. An attack in parentheses failed a check; it is the '
        "strongest one tried. Click the checks count for statistics and thresholds. See docs/report.md.</p>",
    ]
    if summary.get("notes"):
        body.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in summary["notes"]) + "</ul>")
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
    text = render_html(_jsonable(summary), figures_dir)
    return _atomic_write(path, text.encode("utf-8"))
