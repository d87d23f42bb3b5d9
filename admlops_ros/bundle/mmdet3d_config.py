"""mmdet3d / mmengine model configs (.py with a _base_ chain) read into a plain dict."""
from __future__ import annotations

import copy
import re
import types
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

from admlops_ros.errors import AdmlopsError

PathLike = Union[str, Path]
_BASE_VAR = re.compile(r"\{\{\s*_base_\.([\w\.]+)\s*\}\}")


class Mmdet3dConfigError(AdmlopsError, ValueError):
    """A model config this tool cannot read or turn into a spec; names the key and the fix."""


def load_config(path: PathLike) -> Dict[str, Any]:
    """Read an mmdet3d/mmengine config file into a plain dict, ``_base_`` chain merged.

    Uses ``mmengine.Config`` when importable; otherwise a loader following mmengine's rules
    for plain-assignment configs: bases load first (a key defined in two bases is an error),
    the child merges into them recursively, ``_delete_=True`` replaces instead of merging,
    lists are replaced whole, ``{{_base_.name}}`` substitutes a base value.
    """
    path = Path(path)
    if not path.is_file():
        raise Mmdet3dConfigError(f"no config file at {path}")
    try:
        from mmengine import Config  # optional
    except ImportError:
        return _load(path.resolve(), ())
    cfg = Config.fromfile(str(path))
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg._cfg_dict.to_dict())


def _plain(value: Any) -> bool:
    return not isinstance(value, (types.ModuleType, types.FunctionType, type,
                                  types.BuiltinFunctionType))


def _lookup(data: Mapping[str, Any], dotted: str, where: Path) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise Mmdet3dConfigError(f"{where}: {{{{_base_.{dotted}}}}} is not defined in its "
                                     "_base_ files")
        cur = cur[part]
    return cur


def _load(path: Path, chain: Tuple[Path, ...]) -> Dict[str, Any]:
    if path in chain:
        raise Mmdet3dConfigError(f"circular _base_ chain: {' -> '.join(map(str, chain + (path,)))}")
    if not path.is_file():
        raise Mmdet3dConfigError(f"{chain[-1] if chain else path}: _base_ file {path} not found; "
                                 "keep the config's _base_ files beside it (the configs/ tree "
                                 "of mmdetection3d)")
    if path.suffix != ".py":
        raise Mmdet3dConfigError(f"{path}: only Python configs are read without mmengine; "
                                 "`pip install mmengine` for .yaml/.json configs")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise Mmdet3dConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                 "give an mmdet3d config (.py)") from None
    if "read_base" in source:
        raise Mmdet3dConfigError(f"{path}: new-style (read_base) configs need mmengine: "
                                 "`pip install mmengine`")
    # _base_ is a plain assignment; evaluate the file once (placeholders as None) to find it.
    namespace = _exec(_BASE_VAR.sub("None", source), path, {})
    bases = namespace.get("_base_", [])
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged: Dict[str, Any] = {}
    for rel in bases:
        base = _load((path.parent / rel).resolve(), chain + (path,))
        dup = sorted(set(base) & set(merged))
        if dup:
            raise Mmdet3dConfigError(f"{path}: key(s) {dup} defined in more than one _base_ "
                                     "file (mmengine forbids this)")
        merged.update(base)
    if _BASE_VAR.search(source):
        source = _BASE_VAR.sub(lambda m: repr(_lookup(merged, m.group(1), path)), source)
        namespace = _exec(source, path, {})
    own = {k: v for k, v in namespace.items()
           if not k.startswith("__") and k != "_base_" and _plain(v)}
    return _merge(own, merged)


def _exec(source: str, path: Path, namespace: Dict[str, Any]) -> Dict[str, Any]:
    namespace["__file__"] = str(path)
    try:
        exec(compile(source, str(path), "exec"), namespace)  # a config is trusted Python
    except Exception as exc:
        raise Mmdet3dConfigError(f"{path}: could not evaluate the config: {exc!r}") from exc
    return namespace


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != "_delete_"}
    if isinstance(value, (list, tuple)):
        return type(value)(_strip_delete(v) for v in value)
    return value


def _merge(child: Mapping[str, Any], base: Mapping[str, Any]) -> Dict[str, Any]:
    """mmengine's merge of a child config into its base (a new dict)."""
    out = copy.deepcopy(dict(base))
    for key, value in child.items():
        if isinstance(value, dict) and key in out and not value.get("_delete_", False):
            if not isinstance(out[key], dict):
                raise Mmdet3dConfigError(f"config key {key!r} is a dict in the child but a "
                                         f"{type(out[key]).__name__} in _base_; add "
                                         "_delete_=True to replace it")
            out[key] = _merge({k: v for k, v in value.items() if k != "_delete_"}, out[key])
        else:
            out[key] = _strip_delete(copy.deepcopy(value))
    return out
