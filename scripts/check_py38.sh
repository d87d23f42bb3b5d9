#!/usr/bin/env bash
# Python 3.8 gate: the vehicle runs ROS Noetic on Ubuntu 20.04 (Python 3.8) while dev/CI run 3.11,
# so nothing that needs 3.9+ (syntax or stdlib API) may land. Called by tests/test_python38.py.
#
#   1. static:  vermin -t=3.8- over admlops_ros/ scripts/ nodes/ tests/ (+ a PEP 604 `X | Y` check)
#   2. compile: a real python3.8 byte-compiles the same trees (no .pyc left in the tree)
#   3. import:  every pure-Python module of admlops_ros is imported by python3.8 in a cached venv
#               (build/py38-venv: numpy, pyyaml, jsonschema only), plus a ModelSpec.from_dict smoke check
#
# Steps 2-3 are skipped (with a clear line, exit 0 if step 1 passed) when no python3.8 exists.
# The first run builds build/py38-venv (~20-30 s, needs PyPI); later runs reuse it (~4 s).
# Idempotent; runs from any cwd. Override the interpreter with PY38=/path/to/python3.8.
# Exit status: 0 all good, 1 a violation/failure (each named file:line), 2 the check itself broke.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# What is checked. Directories: vermin takes *.py and files with a python shebang line.
TREES=(admlops_ros scripts nodes tests)
# The 3.8 venv: last releases that support 3.8 (numpy 1.24 is the last with cp38 wheels).
PY38_REQS=("numpy==1.24.4" "PyYAML==6.0.2" "jsonschema==4.23.0")
VENV38="$REPO/build/py38-venv"
DEV_PY="$REPO/.venv/bin/python"
[[ -x "$DEV_PY" ]] || DEV_PY=$(command -v python3)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check_py38.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

say() { printf 'check_py38: %s\n' "$*"; }
die() { printf 'check_py38: ERROR: %s\n' "$*" >&2; exit 2; }

# ----------------------------------------------------------------------------------------------
# 1. static check (vermin)
# ----------------------------------------------------------------------------------------------
VERMIN="$REPO/.venv/bin/vermin"
if [[ ! -x "$VERMIN" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then
        say "vermin not installed: pip install -q vermin into .venv"
        "$REPO/.venv/bin/python" -m pip install -q --disable-pip-version-check "vermin>=1.6" \
            >"$TMP/pip-vermin.log" 2>&1 \
            || { cat "$TMP/pip-vermin.log" >&2; die "pip install vermin failed (needs PyPI)"; }
    elif command -v vermin >/dev/null 2>&1; then
        VERMIN=$(command -v vermin)
    else
        die "no .venv (run scripts/setup_env.sh) and no vermin on PATH"
    fi
fi

# --eval-annotations: YES. Every annotation is treated as if evaluated at run time, so `list[int]`,
#   `dict[str, X]`, `tuple[...]` in annotations are violations even under
#   `from __future__ import annotations`. Why:
#   - without it vermin also misses real 3.8 breakage: builtin generics outside a def's annotation
#     (a module-level alias `Boxes = list[int]`: TypeError at import on 3.8) and annotations in
#     a module that lacks the __future__ import (evaluated at def time: TypeError on 3.8);
#   - PEP 563 strings only stay harmless until something evaluates them: typing.get_type_hints(),
#     functools.singledispatch's annotation-based register(), config/schema code walking dataclass
#     fields. On 3.8 those raise TypeError ("'type' object is not subscriptable") on the vehicle only;
#   - the package already spells annotations typing.List/Dict/Optional/Tuple (0 hits when this
#     was written), so the stricter rule costs nothing. Step 3 also runs get_type_hints() on
#     every imported dataclass under 3.8, so the rule is checked at run time too.
# --exclude long: vermin reads any `.long` attribute (torch's `tensor.long()` in training/) as
#   Python 2's `long`, and with --format parsable that bogus "!3" makes it exit 1.
# --no-config-file: the gate's rules live here, not in a setup.cfg someone may add later.
# No `--feature union-types`: its heuristic flags every bit-flag OR (`os.O_RDWR | os.O_CREAT`);
#   PEP 604 unions are checked precisely by the AST pass below instead.
set +e
"$VERMIN" -t=3.8- --violations --no-tips --eval-annotations --no-config-file --exclude long \
    --no-make-paths-absolute --format parsable "${TREES[@]}" >"$TMP/vermin.out" 2>&1
vermin_rc=$?
set -e
# parsable lines: path:line:col:py2:py3:feature; summary lines have an empty line field.
vermin_hits=$(awk -F: '$2 ~ /^[0-9]+$/ {
        feat = $6; for (i = 7; i <= NF; i++) feat = feat ":" $i
        printf "  %s:%s: %s (needs Python %s)\n", $1, $2, feat, $5 }' "$TMP/vermin.out")
vermin_version=$("$VERMIN" --version 2>/dev/null | head -1)

# PEP 604 unions (`X | Y`, 3.10) are not seen by vermin without that heuristic. Flag `|` in any
# annotation (same "annotations are evaluated" policy as above) and, anywhere, `|` with a `None`
# or a bare builtin type name operand (`Alias = int | None`, `isinstance(x, int | str)`).
# Use '# novm' on a line to waive it (the same marker vermin honours).
set +e
NFILES_OUT="$TMP/nfiles" "$DEV_PY" - "${TREES[@]}" >"$TMP/union.out" 2>&1 <<'PY'
import ast, os, sys

BUILTIN_TYPES = {"int", "float", "complex", "str", "bytes", "bool", "list", "dict", "tuple",
                 "set", "frozenset", "type", "object"}

def python_files(roots):
    for root in roots:
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__" and not x.startswith("."))
            for f in sorted(files):
                p = os.path.join(d, f)
                if f.endswith((".py", ".pyi")):
                    yield p
                elif "." not in f:
                    try:
                        with open(p, "rb") as fh:
                            first = fh.readline(200)
                    except OSError:
                        continue
                    if first.startswith(b"#!") and b"python" in first:
                        yield p

def typeish(node):
    return ((isinstance(node, ast.Constant) and node.value is None)
            or (isinstance(node, ast.Name) and node.id in BUILTIN_TYPES))

def unions(tree):
    annots = []
    for n in ast.walk(tree):
        if isinstance(n, ast.arg) and n.annotation is not None:
            annots.append(n.annotation)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns is not None:
            annots.append(n.returns)
        elif isinstance(n, ast.AnnAssign):
            annots.append(n.annotation)
    seen = set()
    for a in annots:
        for n in ast.walk(a):
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr):
                seen.add(n.lineno)
                yield n.lineno, "union type `X | Y` in an annotation"
    for n in ast.walk(tree):
        if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) and n.lineno not in seen
                and (typeish(n.left) or typeish(n.right))):
            yield n.lineno, "union type `X | Y` (evaluated at run time)"

bad = nfiles = 0
for path in python_files(sys.argv[1:]):
    nfiles += 1
    with open(path, encoding="utf-8", errors="replace") as fh:
        src = fh.read()
    try:
        tree = ast.parse(src, path)
    except SyntaxError as exc:  # vermin / compileall report these with more detail
        continue
    lines = src.splitlines()
    for line, what in sorted(set(unions(tree))):
        if "novm" in lines[line - 1]:
            continue
        print("  %s:%d: %s (needs Python 3.10)" % (path, line, what))
        bad += 1
with open(os.environ["NFILES_OUT"], "w") as fh:
    fh.write("%d\n" % nfiles)
sys.exit(1 if bad else 0)
PY
union_rc=$?
set -e

static_ok=1
if [[ -n "$vermin_hits" ]]; then
    static_ok=0
    say "vermin ($vermin_version): code that needs Python > 3.8:"
    printf '%s\n' "$vermin_hits"
elif [[ $vermin_rc -ne 0 ]]; then
    static_ok=0
    say "vermin ($vermin_version) exited $vermin_rc:"
    sed 's/^/  /' "$TMP/vermin.out"
fi
if [[ $union_rc -eq 1 ]]; then
    static_ok=0
    say "PEP 604 union check: code that needs Python >= 3.10:"
    cat "$TMP/union.out"
elif [[ $union_rc -ne 0 ]]; then
    cat "$TMP/union.out" >&2
    die "PEP 604 union check crashed (exit $union_rc)"
fi
nfiles=$(cat "$TMP/nfiles" 2>/dev/null || echo "?")
if [[ $static_ok -eq 1 ]]; then
    say "static: OK (vermin $vermin_version -t=3.8- --eval-annotations, $nfiles python files; PEP 604 check)"
fi

# ----------------------------------------------------------------------------------------------
# 2. find a real Python 3.8
# ----------------------------------------------------------------------------------------------
is_py38() { [[ -x "$1" ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 8))' >/dev/null 2>&1; }
find_py38() {
    local c root cands=()
    [[ -n "${PY38:-}" ]] && cands+=("$PY38")
    # on PATH: may be a pyenv shim that fails when 3.8 is not selected; is_py38 runs it to be sure
    c=$(command -v python3.8 2>/dev/null) && cands+=("$c")
    if command -v pyenv >/dev/null 2>&1 && root=$(pyenv root 2>/dev/null); then
        while IFS= read -r c; do cands+=("$c"); done \
            < <(compgen -G "$root/versions/3.8.*/bin/python3.8" | sort -V -r)
    fi
    while IFS= read -r c; do cands+=("$c"); done \
        < <(compgen -G "/root/.pyenv/versions/3.8*/bin/python" | sort -V -r)
    for c in "${cands[@]}"; do
        if is_py38 "$c"; then
            # the real binary (a shim resolves to it), so the venv stamp names a stable path
            "$c" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

if ! PY38_EXE=$(find_py38); then
    say "python3.8 not found: only the static vermin check ran (install one, e.g. pyenv install 3.8, or set PY38=)"
    [[ $static_ok -eq 1 ]] && exit 0 || exit 1
fi
PY38_VERSION=$("$PY38_EXE" -c 'import platform; print(platform.python_version())')
say "python3.8: $PY38_EXE ($PY38_VERSION)"

# A clean environment for every 3.8 process: no 3.11 venv, no ROS dist-packages, no user site.
# No .pyc from 3.8 may land in the tree: compile writes them under $TMP (PYTHONPYCACHEPREFIX),
# the import run writes none (PYTHONDONTWRITEBYTECODE) but still reads the venv's own .pyc.
py38_env() {
    env -u PYTHONHOME -u PYTHONSTARTUP -u PYTHONUSERBASE -u VIRTUAL_ENV -u PYTHONSAFEPATH \
        -u PYTHONPYCACHEPREFIX PYTHONPATH="$REPO" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 "$@"
}

# compileall takes only *.py; the extensionless python scripts (nodes/*, scripts/admlops) are
# compiled with compile() (no .pyc at all). PYTHONPYCACHEPREFIX keeps 3.8 .pyc out of the tree.
compile_ok=1
if ! py38_env PYTHONPYCACHEPREFIX="$TMP/pycache" "$PY38_EXE" -s -m compileall -q "${TREES[@]}" \
        >"$TMP/compile.out" 2>&1; then
    compile_ok=0
fi
py38_env "$PY38_EXE" -s - "${TREES[@]}" >>"$TMP/compile.out" 2>&1 <<'PY' || compile_ok=0
import os, sys
bad = 0
for root in sys.argv[1:]:
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for f in files:
            p = os.path.join(d, f)
            if "." in f:
                continue
            with open(p, "rb") as fh:
                src = fh.read()
            if not (src.startswith(b"#!") and b"python" in src.split(b"\n", 1)[0]):
                continue
            try:
                compile(src, p, "exec", dont_inherit=True)
            except SyntaxError as exc:
                print("*** %s:%s: %s: %s" % (p, exc.lineno, type(exc).__name__, exc.msg))
                bad += 1
sys.exit(1 if bad else 0)
PY
if [[ $compile_ok -eq 1 ]]; then
    say "compile: OK (python$PY38_VERSION -m compileall ${TREES[*]})"
else
    say "compile: python$PY38_VERSION cannot compile:"
    sed 's/^/  /' "$TMP/compile.out"
fi

# ----------------------------------------------------------------------------------------------
# 3. import under 3.8 (cached venv build/py38-venv)
# ----------------------------------------------------------------------------------------------
mkdir -p "$REPO/build"
stamp_want="$PY38_EXE $PY38_VERSION ${PY38_REQS[*]}"
stamp="$VENV38/.check_py38-stamp"
exec 9>"$REPO/build/py38-venv.lock"
flock 9   # two concurrent runs must not build the venv at the same time
if [[ ! -x "$VENV38/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$stamp_want" ]]; then
    say "building $VENV38 (${PY38_REQS[*]}; needs PyPI) ..."
    rm -rf "$VENV38"
    # PYTHONDONTWRITEBYTECODE empty (unset): let pip byte-compile the venv's packages (fast warm imports)
    if ! { py38_env PYTHONDONTWRITEBYTECODE= "$PY38_EXE" -m venv "$VENV38" &&
           py38_env PYTHONDONTWRITEBYTECODE= "$VENV38/bin/python" -m pip install -q \
               --disable-pip-version-check "${PY38_REQS[@]}"; } >"$TMP/pip.log" 2>&1; then
        cat "$TMP/pip.log" >&2
        rm -rf "$VENV38"
        die "building $VENV38 failed (python3.8 -m venv + pip install; needs PyPI)"
    fi
    printf '%s\n' "$stamp_want" >"$stamp"
fi
exec 9>&-

# The ModelSpec smoke check: run in the 3.8 import process and, only if it fails there, again
# under the dev interpreter to tell a 3.8-specific error from a plain bug.
cat >"$TMP/smoke.py" <<'PY'
import glob, importlib, os, sys, traceback
import yaml

def find_model_spec():
    for name in ("admlops_ros.bundle.spec", "admlops_ros.bundle", "admlops_ros.spec"):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if hasattr(getattr(mod, "ModelSpec", None), "from_dict"):
            return mod.ModelSpec
    for name, mod in sorted(sys.modules.items()):  # moved/split: any loaded admlops_ros module
        cls = getattr(mod, "ModelSpec", None) if name.startswith("admlops_ros") else None
        if hasattr(cls, "from_dict"):
            return cls
    raise LookupError("no admlops_ros module defines ModelSpec.from_dict any more: "
                      "update the smoke check in scripts/check_py38.sh")

def smoke():
    """Returns (ok, text)."""
    spec_yaml = "engines/pointpillars_sim_3class/spec.yaml"
    if not os.path.exists(spec_yaml):
        found = sorted(glob.glob("engines/*/spec.yaml"))
        spec_yaml = found[0] if found else spec_yaml
    try:
        cls = find_model_spec()
        with open(spec_yaml) as fh:
            spec = cls.from_dict(yaml.safe_load(fh))
        import dataclasses
        n = len(dataclasses.fields(spec)) if dataclasses.is_dataclass(spec) else 0
        return True, "%s.ModelSpec.from_dict(%s) OK (%d fields)" % (cls.__module__, spec_yaml, n)
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = ["%s:%d" % (os.path.relpath(f.filename), f.lineno) for f in tb
                 if os.path.abspath(f.filename).startswith(os.getcwd())]
        return False, "%s: %s (at %s)" % (type(exc).__name__, exc, where[-1] if where else "?")

if __name__ == "__main__":
    ok, text = smoke()
    print(text)
    sys.exit(0 if ok else 1)
PY

set +e
py38_env SMOKE_PY="$TMP/smoke.py" SMOKE_OUT="$TMP/smoke38.txt" FAILED_OUT="$TMP/failed38.txt" \
    REPO="$REPO" "$VENV38/bin/python" -s - <<'PY'
import dataclasses, importlib, os, sys, textwrap, traceback, typing

REPO = os.environ["REPO"]
assert sys.version_info[:2] == (3, 8), sys.version
leaks = [p for p in sys.path if "/.venv/" in p or "python3.11" in p or "/opt/ros/" in p]
assert not leaks, "the 3.8 process sees the dev venv / ROS: %s" % leaks

# Third-party (or ROS-generated) modules a module may lack here: those modules are skipped.
# Anything else missing (e.g. a 3.9+ stdlib module such as zoneinfo or graphlib) is a failure.
OPTIONAL_TOP = {
    "rospy", "rosbag", "rosbags", "roslib", "rospkg", "rosgraph", "roslaunch", "rostest", "rosmsg",
    "genpy", "genmsg", "std_msgs", "sensor_msgs", "geometry_msgs", "visualization_msgs",
    "diagnostic_msgs", "tf", "tf2_ros", "tf2_msgs", "cv2", "cv_bridge", "mmdeploy_runtime",
    "onnxruntime", "openvino", "onnx", "tensorrt", "pycuda", "cuda",
    "numba", "llvmlite", "matplotlib", "shapely", "tqdm", "scipy",
    "torch", "torchvision", "mmengine", "mmdet3d", "mmdet", "mmcv", "mmdeploy",
}
OPTIONAL_FULL = {"admlops_ros.msg", "admlops_ros.srv"}  # catkin-generated messages
TRAINING_KEEP = {"admlops_ros.training", "admlops_ros.training.configs"}  # torch-free

def modules():
    out = []
    for d, dirs, files in os.walk(os.path.join(REPO, "admlops_ros")):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__" and
                         os.path.exists(os.path.join(d, x, "__init__.py")))
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(d, f), REPO)[:-3].replace(os.sep, ".")
            out.append(rel[: -len(".__init__")] if rel.endswith(".__init__") else rel)
    return sorted(out)

def where(exc):
    if isinstance(exc, SyntaxError) and exc.filename:
        return "%s:%s" % (os.path.relpath(exc.filename, REPO), exc.lineno)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.abspath(f.filename).startswith(REPO + os.sep)]
    return "%s:%d" % (os.path.relpath(frames[-1].filename, REPO), frames[-1].lineno) if frames else "?"

imported, skipped, failed = [], [], []
for name in modules():
    if name.endswith(".__main__"):
        skipped.append((name, "entry point (runs the CLI when imported; compiled only)"))
        continue
    if name.startswith("admlops_ros.training.") and name not in TRAINING_KEEP:
        skipped.append((name, "torch side of admlops_ros.training (not imported by policy)"))
        continue
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if missing in OPTIONAL_FULL or missing.split(".")[0] in OPTIONAL_TOP:
            skipped.append((name, missing))
        else:
            failed.append((name, "ModuleNotFoundError: %s (at %s)" % (exc, where(exc))))
    except BaseException as exc:  # SyntaxError, TypeError (list[int], X | Y), AttributeError, ...
        failed.append((name, "%s: %s (at %s)" % (type(exc).__name__, exc, where(exc))))
    else:
        imported.append(name)
with open(os.environ["FAILED_OUT"], "w") as fh:
    fh.write("".join(m + "\n" for m, _ in failed))

# Dataclass introspection: resolve every imported dataclass's annotations the way
# typing.get_type_hints() / schema code would. A TypeError here is a 3.9+/3.10+ annotation
# (`list[int]`, `X | None`); a NameError is a TYPE_CHECKING-only name, not a 3.8 problem.
hints_ok, hints_unresolved = 0, []
for name in imported:
    mod = sys.modules[name]
    for attr, obj in sorted(vars(mod).items()):
        if not (isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == name):
            continue
        try:
            typing.get_type_hints(obj)
            hints_ok += 1
        except TypeError as exc:
            failed.append(("%s.%s" % (name, attr), "typing.get_type_hints: TypeError: %s" % exc))
        except Exception as exc:
            hints_unresolved.append("%s.%s (%s: %s)" % (name, attr, type(exc).__name__, exc))

print("py38 import: imported %d, skipped %d, failed %d" % (len(imported), len(skipped), len(failed)))
print(textwrap.fill(", ".join(imported), width=100, initial_indent="  imported: ",
                    subsequent_indent="            "))
if skipped:
    print("  skipped (module: missing dependency):")
    for m, why in skipped:
        print("    %s: %s" % (m, why))
if failed:
    print("  FAILED (module: error):")
    for m, why in failed:
        print("    %s: %s" % (m, why))
print("  dataclasses: get_type_hints resolved %d%s" % (
    hints_ok, "; unresolvable (not 3.8-related): " + "; ".join(hints_unresolved)
    if hints_unresolved else ""))

sys.path.insert(0, os.path.dirname(os.environ["SMOKE_PY"]))
import smoke
ok, text = smoke.smoke()
with open(os.environ["SMOKE_OUT"], "w") as fh:
    fh.write(("OK " if ok else "FAIL ") + text + "\n")
sys.exit(1 if failed else 0)
PY
import_rc=$?
set -e

[[ $import_rc -le 1 ]] || die "the python3.8 import run crashed (exit $import_rc)"
if [[ -s "$TMP/failed38.txt" ]]; then
    # Still failures either way; this only says whether the dev interpreter breaks the same way.
    env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$REPO" "$DEV_PY" - "$TMP/failed38.txt" <<'PY' || true
import importlib, sys
print("  the same failed imports under Python %d.%d:" % sys.version_info[:2])
for name in open(sys.argv[1]).read().split():
    try:
        importlib.import_module(name)
    except Exception as exc:
        print("    %s: fails there too (%s): broken, not 3.8-specific" % (name, type(exc).__name__))
    else:
        print("    %s: imports there: 3.8-specific" % name)
PY
fi
smoke_ok=1
if [[ ! -f "$TMP/smoke38.txt" ]]; then
    smoke_ok=0; say "smoke: no result from python3.8"
elif [[ $(cut -d' ' -f1 "$TMP/smoke38.txt") == OK ]]; then
    say "smoke (python3.8): $(cut -d' ' -f2- "$TMP/smoke38.txt")"
else
    err38=$(cut -d' ' -f2- "$TMP/smoke38.txt")
    # 3.8-specific iff the same call passes on the dev interpreter
    if dev_out=$(env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$REPO" "$DEV_PY" "$TMP/smoke.py" 2>&1); then
        smoke_ok=0
        say "smoke: FAILED on python3.8 only (3.8-specific): $err38"
    elif [[ "${err38%%:*}" == "${dev_out%%:*}" ]]; then
        say "smoke: WARNING: ModelSpec.from_dict fails on 3.8 and on $("$DEV_PY" -V 2>&1) alike" \
            "(not 3.8-related, reported only): $err38"
    else
        smoke_ok=0
        say "smoke: FAILED on python3.8: $err38 (the dev interpreter fails differently: $dev_out)"
    fi
fi

if [[ $static_ok -eq 1 && $compile_ok -eq 1 && $import_rc -eq 0 && $smoke_ok -eq 1 ]]; then
    say "OK: static, compile and import checks pass for Python $PY38_VERSION"
    exit 0
fi
say "FAILED: see the lines above (static=$static_ok compile=$compile_ok import_rc=$import_rc smoke=$smoke_ok)"
exit 1
