"""The `admlops analyze` report: a self-contained HTML page and a text summary of analysis.json."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from admlops_ros.data.analyze import (ALL, CLASS_2D, FRAME_FEATURE, MAIN_CLASSES,
                                      OBJECT_FEATURES, SCAN_FEATURES, class_table)
from admlops_ros.evaluation.report import CSS, figure_png, pyplot
from admlops_ros.evaluation.report import write_html as write_report_html

REF_COLOUR, OTHER_COLOUR = "tab:blue", "tab:red"
MAX_UNDER_ROWS = 60          # under-covered bins listed in the HTML / text (all in the JSON)


def _png(fig) -> str:
    """Base64 PNG of a figure laid out by hand (a tight bounding box draws it twice)."""
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.2, top=0.88, wspace=0.3)
    return figure_png(fig, tight=False, dpi=80)


def _ext(h: Dict[str, Any]) -> np.ndarray:
    return np.array([h["below"]] + list(h["counts"]) + [h["above"]], np.float64)


def _short(v: float) -> str:
    return f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:.3g}"


def _panel(ax, feature: str, h_ref: Optional[Dict[str, Any]],
           h_other: Optional[Dict[str, Any]], title: str) -> None:
    """Bars (one dataset: counts) or overlaid steps (two: normalised frequencies)."""
    h_any = h_ref or h_other
    edges = np.asarray(h_any["edges"], np.float64)
    pos = np.arange(len(edges) + 1)  # below, bins..., above as equal-width slots
    compare = h_other is not None
    for h, colour, name in ((h_ref, REF_COLOUR, "reference"), (h_other, OTHER_COLOUR, "other")):
        if h is None:
            continue
        c = _ext(h)
        if compare:
            c = c / c.sum() if c.sum() else c
            ax.step(pos, c, where="mid", color=colour, label=f"{name} (n={int(_ext(h).sum())})")
            ax.fill_between(pos, c, step="mid", color=colour, alpha=0.15)
        else:
            ax.bar(pos, c, width=0.9, color=colour)
    step = -(-len(edges) // 7)  # at most 7 edge labels; slots 0 and -1 are below / above
    ticks = [(k + 0.5, _short(edges[k])) for k in range(0, len(edges), step)]
    ax.set_xticks([t for t, _ in ticks])
    ax.set_xticklabels([text for _, text in ticks], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("frequency" if compare else "count", fontsize=8)
    ax.set_xlabel(feature, fontsize=8)
    ax.grid(alpha=0.3)
    if compare:
        ax.legend(fontsize=7)


def _groups_of(result: Dict[str, Any]) -> List[str]:
    present = set(result["reference"]["objects"]) | set(result.get("other", {}).get("objects", {}))
    return [ALL] + [c for c in MAIN_CLASSES if c in present]


def feature_png(result: Dict[str, Any], section: str, feature: str) -> str:
    """One feature for ALL and the main classes (section "objects" / "objects_per_frame")."""
    plt = pyplot()
    groups = _groups_of(result)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 2.8), squeeze=False)
    other = result.get("other")
    for group, ax in zip(groups, axes[0]):
        def get(side: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
            if side is None or group not in side[section]:
                return None
            h = side[section][group]
            return h[feature] if section == "objects" else h
        h_ref, h_other = get(result["reference"]), get(other)
        if h_ref is None and h_other is None:
            ax.set_visible(False)
            continue
        _panel(ax, feature, h_ref, h_other if other is not None else None, group)
    return _png(fig)


def scan_png(result: Dict[str, Any]) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(SCAN_FEATURES), figsize=(3.6 * len(SCAN_FEATURES), 2.8),
                             squeeze=False)
    other = result.get("other")
    for feat, ax in zip(SCAN_FEATURES, axes[0]):
        _panel(ax, feat.name, result["reference"]["scan"][feat.name],
               other["scan"][feat.name] if other else None, feat.name)
    return _png(fig)


def grid_png(result: Dict[str, Any]) -> str:
    """Car objects per distance x points-per-box cell (reference; other beside it)."""
    plt = pyplot()
    sides = [("reference", result["reference"])] + ([("other", result["other"])]
                                                   if "other" in result else [])
    fig, axes = plt.subplots(1, len(sides), figsize=(5.2 * len(sides), 3.8), squeeze=False)
    for (name, side), ax in zip(sides, axes[0]):
        g = side["car_distance_points"]
        counts = np.asarray(g["counts"], np.float64)
        im = ax.imshow(counts.T, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(0, len(g["row_edges"]) - 1, 2))
        ax.set_xticklabels([f"{e:g}" for e in g["row_edges"][:-1:2]], fontsize=7)
        ax.set_yticks(range(len(g["column_edges"]) - 1))
        ax.set_yticklabels([f"{e:g}" for e in g["column_edges"][:-1]], fontsize=7)
        ax.set(xlabel="distance bin start (m)", ylabel="points-in-box bin start",
               title=f"{name}: {CLASS_2D} objects")
        fig.colorbar(im, ax=ax)
    return _png(fig)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}"
        return html.escape(str(v))
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
            + "</table>")


def _bin_text(u: Dict[str, Any]) -> str:
    if "bin" in u:
        return str(u["bin"])
    lo, hi = u.get("low"), u.get("high")
    text = (f"< {hi:g}" if lo is None else f">= {lo:g}" if hi is None else f"[{lo:g}, {hi:g})")
    if "points_low" in u:
        text += f" m, points [{u['points_low']:g}, {u['points_high']:g})"
    return text


def _side_rows(side: Dict[str, Any]) -> List[List[Any]]:
    return [["frames", side["frames"]], ["frames with ground truth", side["frames_with_gt"]],
            ["objects", side["objects_total"]],
            ["points per scan (mean)", _mean(side["scan"]["points_per_scan"])],
            ["holes (files or messages skipped)", len(side["holes"])]] + [
        [f"{k} range", "-" if v is None else f"{v[0]:.2f} .. {v[1]:.2f}"]
        for k, v in side["ranges"].items()]


def _mean(h: Dict[str, Any]) -> Optional[float]:
    """Mean from bin centres (below / above ignored): an approximate figure for tables."""
    c = np.asarray(h["counts"], np.float64)
    if c.sum() == 0:
        return None
    e = np.asarray(h["edges"], np.float64)
    return float((c * 0.5 * (e[:-1] + e[1:])).sum() / c.sum())


def write_html(path: Path, result: Dict[str, Any]) -> Path:
    """Writes the self-contained report (PNG figures embedded as base64) of an analysis dict.

    Raises:
        ReportError: the file cannot be written.
    """
    ref, other = result["reference"], result.get("other")
    title = "admlops analyze: " + ", ".join(Path(p).name for p in ref["inputs"])
    if other:
        title += " vs " + ", ".join(Path(p).name for p in other["inputs"])
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for name, side in (("Reference", ref), ("Other", other)):
        if side is None:
            continue
        parts.append(f"<h2>{name}</h2><p><code>{html.escape(', '.join(side['inputs']))}"
                     f"</code></p>" + _table(["", "value"], _side_rows(side))
                     + "".join(f"<p class='warn'>{html.escape(n)}</p>"
                               for n in side.get("notes", [])))
    parts.append("<h2>Classes</h2>" + _table(
        ["class", "reference", "reference %"] + (["other"] if other else []),
        [[c, n, f"{pct:.1f}"] + ([o] if other else []) for c, n, o, pct in class_table(result)]))
    if other:
        shift = result["shift"]
        s = shift["settings"]
        parts.append(f"<h2>Shift, ranked</h2><p>{html.escape(s['jsd'])}; total variation: "
                     f"{html.escape(s['total_variation'])}.</p>" + _table(
                         ["group", "feature", "JSD (bits)", "TV", "reference n", "other n"],
                         [[d["group"], d["feature"], d["jsd_bits"], d["total_variation"],
                           d["reference_total"], d["other_total"]]
                          for d in shift["divergences"]]))
        under = shift["under_covered"]
        parts.append(f"<h2>Under-covered bins ({len(under)})</h2><p>{html.escape(s['under_covered'])}"
                     f"{'; the first ' + str(MAX_UNDER_ROWS) + ' shown, all in analysis.json' if len(under) > MAX_UNDER_ROWS else ''}"
                     "</p>" + _table(
                         ["group", "feature", "bin", "reference", "other", "freq. ratio"],
                         [[u["group"], u["feature"], _bin_text(u), u["reference_count"],
                           u["other_count"], u["frequency_ratio"]]
                          for u in under[:MAX_UNDER_ROWS]]))
    parts.append("<h2>Objects</h2><p>" + html.escape(result.get("histogram_semantics", ""))
                 + "; in the plots the first and last slots are below and above.</p>")
    for feat in OBJECT_FEATURES:
        parts.append(f"<h3>{feat.name} ({html.escape(feat.description)})</h3><img src='data:image/png;"
                     f"base64,{feature_png(result, 'objects', feat.name)}'>")
    parts.append(f"<h3>{FRAME_FEATURE.name}</h3><img src='data:image/png;base64,"
                 f"{feature_png(result, 'objects_per_frame', FRAME_FEATURE.name)}'>")
    parts.append(f"<h3>{CLASS_2D}: distance x points in box</h3><img src='data:image/png;"
                 f"base64,{grid_png(result)}'>")
    parts.append(f"<h2>Scans</h2><img src='data:image/png;base64,{scan_png(result)}'>")
    holes = ref["holes"] + (other["holes"] if other else [])
    if holes:
        parts.append("<h2 class='warn'>Holes (skipped, the rest analysed)</h2>" + _table(
            ["source", "file", "problem"], [[h["source"], h["file"], h["problem"]]
                                            for h in holes[:200]]))
    return write_report_html(path, parts)


def summary_text(result: Dict[str, Any], top: int = 10) -> str:
    """The table printed by `admlops analyze`: sides, classes, top shifts, under-covered bins."""
    ref, other = result["reference"], result.get("other")
    lines = []
    for name, side in (("reference", ref), ("other", other)):
        if side is not None:
            lines.append(f"{name}: {side['frames']} frames ({side['frames_with_gt']} with ground "
                         f"truth), {side['objects_total']} objects, {len(side['holes'])} holes; "
                         f"{', '.join(side['inputs'])}")
    for name, side in (("reference", ref), ("other", other)):
        for note in (side or {}).get("notes", []):
            lines.append(f"note ({name}): {note}")
        holes = (side or {}).get("holes", [])
        for h in holes[:5]:
            lines.append(f"hole ({name}): {h['file']}: {h['problem']}")
        if len(holes) > 5:
            lines.append(f"... {len(holes) - 5} more holes in analysis.json")
    lines.append("")
    head = f"{'class':<16}{'reference':>10}{'ref %':>8}" + (f"{'other':>10}" if other else "")
    lines.append(head)
    for c, n, o, pct in class_table(result):
        lines.append(f"{c:<16}{n:>10}{pct:>8.1f}" + (f"{o:>10}" if other else ""))
    if other:
        shift = result["shift"]
        lines += ["", f"largest shifts (JSD bits, of {len(shift['divergences'])}):",
                  f"{'group':<12}{'feature':<28}{'JSD':>8}{'TV':>8}{'ref n':>9}{'other n':>9}"]
        for d in shift["divergences"][:top]:
            jsd = "-" if d["jsd_bits"] is None else f"{d['jsd_bits']:.3f}"
            tv = "-" if d["total_variation"] is None else f"{d['total_variation']:.3f}"
            lines.append(f"{d['group']:<12}{d['feature']:<28}{jsd:>8}{tv:>8}"
                         f"{d['reference_total']:>9}{d['other_total']:>9}")
        under = shift["under_covered"]
        lines += ["", f"under-covered bins: {len(under)} ({shift['settings']['under_covered']})"]
        for u in under[:top]:
            lines.append(f"  {u['group']:<12}{u['feature']:<28}{_bin_text(u):<34}"
                         f"ref {u['reference_count']:>5}  other {u['other_count']:>5}")
    return "\n".join(lines)


__all__ = ["write_html", "summary_text", "feature_png", "scan_png", "grid_png"]
