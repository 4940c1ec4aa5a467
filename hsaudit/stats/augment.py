"""What to do with a finding: an augmented pyhf workspace in which the worst hidden
mismodelling of a systematic is one more shape nuisance parameter.

Given the workspace the audit writes (``Model.to_pyhf_workspace``, HistFactory JSON as in
pyhf, Heinrich et al., JOSS 6 (2021) 2823) and the attacked templates of the worst hidden
attack of a systematic (per channel and sample), a ``histosys`` modifier named
``hidden_<systematic>`` is added to every sample the attack changes: +1 sigma = the attacked
template, -1 sigma = its mirror ``nom - (att - nom)`` clipped at 0; a histosys carries a unit
Gaussian constraint in HistFactory. The parameter is shared by all affected samples and
channels (one mismodelling moves them coherently). The workspace is validated against pyhf's
schema (``pyhf.Workspace``) and its model is built; the expected uncertainty of mu with and
without the extra parameter comes from an Asimov fit (mu = 1, every nuisance at its nominal
value) with this project's batched engine (hsaudit.stats.fit: pyhf's NLL, Hessian
uncertainty). An analyst can take the file straight into their fit.
"""

from __future__ import annotations

import copy

import numpy as np

from hsaudit.errors import AuditError


def attacked_sample_templates(likelihood: dict, rows_info: dict, attack) -> dict:
    """{channel: {sample: attacked template}} of the samples an attack (an
    :class:`hsaudit.stats.impacts.AttackedEvents`) changes: the model's nominal template
    of the sample plus the change of its events' histogram (signal not scaled by mu, as a
    template). Datasets without a template in a channel are left out (the model cannot
    carry them there)."""
    from hsaudit.fit_stage import attacked_deltas

    deltas = attacked_deltas(likelihood, rows_info, attack.rows, attack.attacked_outputs, attack.regions_after,
                             attack.eval_weights, per_dataset=True)
    names = likelihood["datasets"]
    out = {}
    for ch, per_ds in deltas.items():
        samples = likelihood["spec"]["channels"][ch]["samples"]
        for d, delta in per_ds.items():
            name = names[d]
            if name in samples and np.any(delta != 0):
                out.setdefault(ch, {})[name] = np.asarray(samples[name]["nominal"], dtype=np.float64) + delta
    return out


def _asimov_sigma_mu(workspace: dict) -> float:
    from hsaudit.stats.fit import fit_toys
    from hsaudit.stats.model import Model

    model = Model.from_pyhf_workspace(workspace)
    fit = fit_toys(model, model.expected_main()[None], max_iter=500)
    if not fit.converged[0]:
        raise AuditError("the Asimov fit of the (augmented) workspace did not converge")
    return float(fit.sigma_mu[0])


def validate_workspace(workspace: dict) -> None:
    """pyhf's schema validation and model building; AuditError with pyhf's message if not."""
    import pyhf

    try:
        pyhf.Workspace(workspace).model()
    except Exception as exc:  # pyhf raises its own exception types (schema, modifiers)
        raise AuditError(f"the workspace is not a valid pyhf workspace: {exc}") from None


def augment_workspace(workspace: dict, attacked: dict, systematic: str, *, parameter: str | None = None) -> tuple[dict, dict]:
    """(augmented workspace, info) with ``hidden_<systematic>`` as a histosys (see the module
    docstring). ``attacked``: {channel: {sample: attacked yields}}; samples equal to their
    nominal get no modifier. info: parameter, affected samples, expected sigma_mu without and
    with the extra parameter (Asimov fit, this project's engine) and their ratio."""
    if not isinstance(workspace, dict) or "channels" not in workspace:
        raise AuditError("workspace must be a pyhf workspace dict (with 'channels')")
    name = parameter or f"hidden_{systematic}"
    ws = copy.deepcopy(workspace)
    channels = {c["name"]: c for c in ws["channels"]}
    for c in ws["channels"]:
        for s in c["samples"]:
            if any(m["name"] == name for m in s["modifiers"]):
                raise AuditError(f"the workspace already has a parameter '{name}': choose another name")
    if not isinstance(attacked, dict):
        raise AuditError("attacked templates must be {channel: {sample: yields}}")
    affected = []
    for ch, per_sample in attacked.items():
        if ch not in channels:
            raise AuditError(f"attacked templates name channel '{ch}', the workspace has {sorted(channels)}")
        samples = {s["name"]: s for s in channels[ch]["samples"]}
        for sname, yields in per_sample.items():
            if sname not in samples:
                raise AuditError(f"attacked templates name sample '{sname}' in channel '{ch}'; "
                                 f"the workspace has {sorted(samples)}")
            nom = np.asarray(samples[sname]["data"], dtype=np.float64)
            att = np.asarray(yields, dtype=np.float64)
            if att.shape != nom.shape:
                raise AuditError(f"attacked template of '{sname}' in '{ch}' has {att.size} bins, the workspace "
                                 f"{nom.size} (mismatched binning)")
            if not np.isfinite(att).all():
                raise AuditError(f"attacked template of '{sname}' in '{ch}' contains NaN or inf")
            if np.array_equal(att, nom):
                continue
            hi = np.clip(att, 0.0, None)
            lo = np.clip(2.0 * nom - att, 0.0, None)
            samples[sname]["modifiers"].append({"name": name, "type": "histosys",
                                                "data": {"hi_data": hi.tolist(), "lo_data": lo.tolist()}})
            affected.append({"channel": ch, "sample": sname})
    validate_workspace(ws)
    without = _asimov_sigma_mu(workspace)
    with_extra = _asimov_sigma_mu(ws)
    info = {"parameter": name, "systematic": systematic, "affected": affected,
            "sigma_mu_without": without, "sigma_mu_with": with_extra,
            "sigma_mu_ratio": with_extra / without if without > 0 else float("nan"),
            "fit": "Asimov (mu = 1, nuisances nominal), batched engine with pyhf's NLL, Hessian uncertainty"}
    return ws, info


__all__ = ["augment_workspace", "attacked_sample_templates", "validate_workspace"]
