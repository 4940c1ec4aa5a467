# Source me:  source setup.sh
# Creates .venv if missing, installs the project into it (fast when already installed),
# exports LAW_HOME, LAW_CONFIG_FILE, DATA_PATH and PYTHONPATH, and indexes the law tasks.
# Works from any working directory. Override DATA_PATH (outputs) or AUDIT_VENV before sourcing.

_audit_setup() {
    local this_file
    if [ -n "${BASH_SOURCE[0]:-}" ]; then this_file="${BASH_SOURCE[0]}"; elif [ -n "${ZSH_VERSION:-}" ]; then this_file="${(%):-%x}"; else this_file="$0"; fi
    local base
    base="$(cd "$(dirname "$this_file")" && pwd)" || return 1

    export AUDIT_BASE="$base"
    export DATA_PATH="${DATA_PATH:-$base/data}"
    export LAW_HOME="${LAW_HOME:-$base/.law}"
    export LAW_CONFIG_FILE="$base/law.cfg"
    case ":${PYTHONPATH:-}:" in *":$base:"*) ;; *) export PYTHONPATH="$base${PYTHONPATH:+:$PYTHONPATH}" ;; esac
    # many small numpy/torch jobs run side by side: one thread each unless asked otherwise
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    export MPLBACKEND="${MPLBACKEND:-Agg}"

    local venv="${AUDIT_VENV:-$base/.venv}"
    if [ ! -x "$venv/bin/python" ]; then
        echo "setup.sh: creating virtual environment $venv"
        python3 -m venv "$venv" || { echo "setup.sh: could not create $venv (need python3 >= 3.10 with venv)"; return 1; }
    fi
    # shellcheck disable=SC1091
    source "$venv/bin/activate" || return 1

    # reinstall only when the dependency list changed since the last install
    local stamp="$venv/.audit-installed"
    if [ ! -f "$stamp" ] || [ "$base/pyproject.toml" -nt "$stamp" ] || [ "$base/benchmarks/requirements-nodeps.txt" -nt "$stamp" ]; then
        echo "setup.sh: installing the project and its dependencies into $venv (a few minutes the first time)"
        local log="$venv/install.log"
        # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build; the extras
        # for the tests, benchmarks and batch validation; torchattacks (the anchor of
        # benchmarks/attacks.py) without its torchvision requirement
        if ! { python -m pip install --upgrade pip && python -m pip install "torch==2.13.0" \
                && python -m pip install -e "$base[test,bench,batch]" \
                && python -m pip install --no-deps -r "$base/benchmarks/requirements-nodeps.txt"; } >"$log" 2>&1; then
            tail -n 30 "$log"
            echo "setup.sh: installation failed, full log in $log"
            return 1
        fi
        touch "$stamp"
    fi

    mkdir -p "$LAW_HOME" "$DATA_PATH"
    law index -q || { echo "setup.sh: law index failed"; return 1; }
}

_audit_setup "$@"
_audit_setup_rc=$?
unset -f _audit_setup
return $_audit_setup_rc 2>/dev/null || exit $_audit_setup_rc
