#!/usr/bin/env bash
# Lay out a host for desk-supervisor: a venv under /opt/desk-supervisor with the project
# installed, the systemd unit, the sysusers.d / tmpfiles.d snippets, the GPIO udev rule,
# and an example config in /etc/desk-supervisor/ (only if there is none). Then it creates
# the user and directories and reloads systemd. It never enables, starts or restarts the
# service: that is the operator's step (docs/operations.md).
#
# Idempotent: run it again to upgrade (the venv is reused, the project reinstalled, the
# unit and snippets replaced; an existing config, credentials and state are left alone).
#
#   sudo scripts/install.sh [--dry-run] [--prefix DIR] [--python PYTHON] [--pip-extra PKG]...
#                           [--root DIR]
#
#   --dry-run        print every command it would run, run none (no root needed)
#   --prefix DIR     where the venv goes (default /opt/desk-supervisor); the unit's
#                    ExecStart= is rewritten to match
#   --python PYTHON  interpreter for the venv (default python3; 3.11 or newer)
#   --pip-extra PKG  also pip install PKG into the venv (repeatable), e.g. lgpio for a
#                    GPIO button on a Raspberry Pi
#   --root DIR       lay out an image under DIR instead of this host (systemd-sysusers and
#                    systemd-tmpfiles get --root; no daemon-reload, no udev trigger)
set -euo pipefail

PREFIX=/opt/desk-supervisor
PYTHON=python3
DRY_RUN=0
ROOT=
PIP_EXTRA=()
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

while (($#)); do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift ;;
        --python) PYTHON=${2:?--python needs an interpreter}; shift ;;
        --pip-extra) PIP_EXTRA+=("${2:?--pip-extra needs a package}"); shift ;;
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[[ $PREFIX == /* ]] || die "--prefix must be an absolute path, got $PREFIX"
ROOT=${ROOT%/}

VENV=$PREFIX/venv
ETC=/etc/desk-supervisor
CONFIG=$ETC/desk-supervisor.toml
UNIT=/etc/systemd/system/desk-supervisor.service
SYSUSERS=/etc/sysusers.d/desk-supervisor.conf
TMPFILES=/etc/tmpfiles.d/desk-supervisor.conf
UDEV_RULE=/etc/udev/rules.d/60-desk-supervisor-gpio.rules
DOC=/usr/share/doc/desk-supervisor/operations.md

# run CMD...: print it (shell-quoted, like `set -x`), then run it unless --dry-run.
run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    if ((!DRY_RUN)); then "$@"; fi
}
# run_to FILE CMD...: the same, with the command's output written to FILE.
run_to() {
    local file=$1; shift
    printf '+'; printf ' %q' "$@"; printf ' > %q\n' "$file"
    if ((!DRY_RUN)); then "$@" >"$file"; fi
}
note() { printf '# %s\n' "$*"; }

# --- preflight ------------------------------------------------------------------------------
[[ -f $SRC/pyproject.toml && -f $SRC/systemd/desk-supervisor.service ]] ||
    die "$SRC does not look like the desk-supervisor source tree"
if ((!DRY_RUN)) && ((EUID != 0)) && [[ -z $ROOT ]]; then
    die "run as root (or try --dry-run)"
fi
check() {  # a failed check stops a real run; a dry run only reports it
    if ((DRY_RUN)); then note "warning: $*"; else die "$*"; fi
}
if ! command -v "$PYTHON" >/dev/null; then
    check "$PYTHON not found (apt-get install python3 python3-venv)"
elif ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    check "$PYTHON is older than 3.11"
elif ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    check "$PYTHON cannot create venvs (apt-get install python3-venv)"
fi
for tool in systemd-sysusers systemd-tmpfiles; do
    command -v "$tool" >/dev/null || check "$tool not found (apt-get install systemd)"
done
note "desk-supervisor from $SRC into ${ROOT:-}$VENV${ROOT:+ (image root $ROOT)}"

# --- venv and project -----------------------------------------------------------------------
if [[ -x $ROOT$VENV/bin/python ]]; then
    note "venv $ROOT$VENV exists: reused"
else
    run install -d -m 0755 "$ROOT$PREFIX"
    run "$PYTHON" -m venv "$ROOT$VENV"
fi
# A local directory is always rebuilt and reinstalled, so the same version number picks
# up new code too; dependencies are upgraded only when the project needs newer ones.
run "$ROOT$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir \
    --upgrade-strategy only-if-needed --upgrade "$SRC" "${PIP_EXTRA[@]}"

# --- unit, snippets, udev rule, docs ----------------------------------------------------------
run install -d -m 0755 "$ROOT/etc/systemd/system" "$ROOT/etc/sysusers.d" \
    "$ROOT/etc/tmpfiles.d" "$ROOT/etc/udev/rules.d" "$ROOT${DOC%/*}"
run_to "$ROOT$UNIT" sed "s#^ExecStart=/opt/desk-supervisor/venv/#ExecStart=$VENV/#" \
    "$SRC/systemd/desk-supervisor.service"
run chmod 0644 "$ROOT$UNIT"
run install -m 0644 "$SRC/systemd/desk-supervisor.sysusers" "$ROOT$SYSUSERS"
run install -m 0644 "$SRC/systemd/desk-supervisor.tmpfiles" "$ROOT$TMPFILES"
run install -m 0644 "$SRC/systemd/60-desk-supervisor-gpio.rules" "$ROOT$UDEV_RULE"
run install -m 0644 "$SRC/docs/operations.md" "$ROOT$DOC"

# --- user and groups (before anything is chowned to them) -------------------------------------
if [[ -n $ROOT ]]; then
    run systemd-sysusers --root="$ROOT"
else
    run systemd-sysusers "$SYSUSERS"
fi

# --- config (only if absent: an operator's file is never overwritten) --------------------------
if [[ -e $ROOT$CONFIG ]]; then
    note "$ROOT$CONFIG exists: kept"
else
    note "no $CONFIG yet: installing the example, with this host's state and socket paths"
    run install -d -m 0755 "$ROOT$ETC"
    # The example points at /tmp and at local simulators so it runs without root; under
    # the unit (PrivateTmp=) the socket must be in /run and the state in /var/lib.
    run_to "$ROOT$CONFIG" sed \
        -e '1i # Installed by scripts/install.sh from systemd/desk-supervisor.example.toml.' \
        -e '1i # EDIT the [[venues]] before starting: they point at local simulators.' \
        -e '1i # Reference: docs/configuration.md; operations: docs/operations.md.' \
        -e '1i #' \
        -e 's#^state_dir = .*#state_dir = "/var/lib/desk-supervisor"#' \
        -e 's#^socket = .*#socket = "/run/desk-supervisor/control.sock"#' \
        "$SRC/systemd/desk-supervisor.example.toml"
fi

# --- directories, modes, owners ------------------------------------------------------------
if [[ -n $ROOT ]]; then
    run systemd-tmpfiles --create --root="$ROOT"
else
    run systemd-tmpfiles --create "$TMPFILES"
fi

# --- udev and systemd (only on a live host) ----------------------------------------------------
if [[ -z $ROOT ]] && command -v udevadm >/dev/null && [[ -d /run/udev ]]; then
    run udevadm control --reload
    run udevadm trigger --subsystem-match=gpio --action=add
else
    note "udev is not running here: rule installed, not triggered"
fi
if [[ -z $ROOT && -d /run/systemd/system ]]; then
    run systemctl daemon-reload
    if systemctl --quiet is-active desk-supervisor.service; then
        note "desk-supervisor is running the previous version; restart it when the desk is"
        note "ready for a short supervisor outage: systemctl restart desk-supervisor"
    fi
else
    note "systemd is not running here: skipped daemon-reload"
fi

note "done. Next (docs/operations.md): edit $CONFIG, put venue keys in $ETC/credentials/,"
note "  $VENV/bin/desk-supervisor check-config --config $CONFIG"
note "  systemctl enable --now desk-supervisor && journalctl -u desk-supervisor -f"
