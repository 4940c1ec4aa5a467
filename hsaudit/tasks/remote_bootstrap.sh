#!/usr/bin/env bash
# Job bootstrap of the hidden-systematics audit: law's job script (law_job.sh) sources this file
# in the job directory ($LAW_JOB_HOME) before it runs the task branches. The fields in double braces are
# rendered at submission by hsaudit/tasks/remote.py (BatchWorkflow._render_variables):
#   audit_base       the checkout on the submitting machine (read from a shared file system)
#   audit_data_path  DATA_PATH of the submitting machine (outputs; must be visible on the node)
#   audit_venv       AUDIT_VENV of the submitting machine, if set
#   audit_bundle     name of the shipped repository tarball (--bundle-repo), else empty
# A non-zero return makes law mark the job failed with "bootstrap file failed" (code 20).

_audit_job_bootstrap() {
    local base="{{audit_base}}"
    local bundle="{{audit_bundle}}"
    local venv="{{audit_venv}}"

    export DATA_PATH="{{audit_data_path}}"
    # a law home per job: concurrent jobs never race on one task index file
    export LAW_HOME="${LAW_JOB_HOME:-$PWD}/.law"

    if [ -n "${bundle}" ]; then
        # pools without shared software disk: unpack the shipped checkout next to the job
        base="${LAW_JOB_HOME:-$PWD}/audit_repo"
        mkdir -p "${base}" || return 1
        if ! tar -xzf "${bundle}" -C "${base}"; then
            >&2 echo "remote_bootstrap: cannot unpack the repository bundle ${bundle} in $PWD"
            return 1
        fi
        # the submitter's venv is only used when the node sees it; else setup.sh builds one
        if [ -n "${venv}" ] && [ ! -x "${venv}/bin/python" ]; then venv=""; fi
        if [ -z "${venv}" ] && [ -x "{{audit_base}}/.venv/bin/python" ]; then venv="{{audit_base}}/.venv"; fi
    fi

    if [ ! -f "${base}/setup.sh" ]; then
        >&2 echo "remote_bootstrap: ${base}/setup.sh not found on $(hostname): the checkout must be on a file system shared with the nodes, or submit with --bundle-repo"
        return 1
    fi
    if [ ! -d "${DATA_PATH}" ]; then
        mkdir -p "${DATA_PATH}" 2>/dev/null || {
            >&2 echo "remote_bootstrap: DATA_PATH ${DATA_PATH} is not reachable from $(hostname): outputs must be on a shared file system"
            return 1
        }
    fi
    [ -n "${venv}" ] && export AUDIT_VENV="${venv}"

    echo "remote_bootstrap: source ${base}/setup.sh (DATA_PATH=${DATA_PATH}${AUDIT_VENV:+, AUDIT_VENV=${AUDIT_VENV}})"
    # shellcheck disable=SC1091
    source "${base}/setup.sh" || { >&2 echo "remote_bootstrap: ${base}/setup.sh failed"; return 1; }
    return 0
}

_audit_job_bootstrap
