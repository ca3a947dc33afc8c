"""Self-contained HTML report (tables in the paper's layout, per-frame plots as PNG).

`render_report(results, path)` takes one `EvalResult` (the CLI) or several (one row per
setting, e.g. benchmarks/compare_settings.py) and writes a single HTML file with every
image embedded, so it can be mailed or attached as is. Plots are drawn with matplotlib's
Agg backend; `plots_dir` also writes them as PNG files.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from xdyna_core.eval.info import METRICS, PAPER_TABLE1, PAPER_TABLE2, arrow
from xdyna_core.eval.runner import RULES, EvalResult, _atomic_write_text

__all__ = ["render_report", "format_value", "paper_table_rows", "per_frame_plot_png"]

REGION_NAMES = {"full": "Full frame", "fg": "Foreground", "bg": "Background"}
REGION_COLORS = {"full": "#2563eb", "fg": "#db2777", "bg": "#059669"}
PLOT_METRICS = ("psnr", "ssim", "l1", "lpips", "face-cos")


def format_value(metric: str, value) -> str:
    """How a number is printed in tables: PSNR +inf as ∞, Face-Det as a percentage."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    v = float(value)
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if metric == "face-det":
        return f"{v:.1f}%"
    if v != 0 and abs(v) < 0.01 and metric not in ("l1",):
        return f"{v:.2g}"  # small distances (few samples, tiny networks) stay visible
    if metric == "l1-disco":
        return f"{v:.3g}"
    if metric == "l1":
        return f"{v:.4f}"
    if metric in ("fid", "fvd", "cdfvd"):
        return f"{v:.2f}"
    return f"{v:.3f}"


def _better(metric: str, a, b) -> Optional[bool]:
    """Is b better than a? None when not comparable."""
    if a is None or b is None:
        return None
    a, b = float(a), float(b)
    if a == b or math.isnan(a) or math.isnan(b):
        return None
    return (b > a) if METRICS[metric].direction == "higher" else (b < a)


def paper_table_rows(result: EvalResult, layout=PAPER_TABLE2) -> list:
    """[(group, label, metric, region, value, computed_on)] of one result in a paper layout.

    Without a foreground mask the 'Foreground' columns show full-frame numbers
    (`computed_on` says so); background columns stay empty."""
    rows = []
    for group, region, metric, *label in layout:
        use = region
        if region == "fg" and "fg" not in result.regions:
            use = "full"
        value = result.aggregate.get(use, {}).get(metric) if use in result.regions else None
        rows.append((group, label[0] if label else METRICS[metric].label, metric, region, value, use if use in result.regions else None))
    return rows


def _img_tag(png: bytes, alt: str, cls: str = "") -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")

    plt.close(fig)
    return buf.getvalue()


def per_frame_plot_png(video: dict, title: str = "") -> Optional[bytes]:
    """Per-frame curves of one video (one panel per metric, one line per region)."""

    matplotlib.use("Agg")

    per_frame = video.get("per_frame") or {}
    panels = [m for m in PLOT_METRICS if any(m in per_frame.get(r, {}) for r in per_frame)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.1), squeeze=False)
    for ax, m in zip(axes[0], panels):
        for region, vals in per_frame.items():
            if m not in vals:
                continue
            y = np.array([np.nan if v is None else float(v) for v in vals[m]], dtype=float)
            y[np.isinf(y)] = np.nan  # identical frames (PSNR +inf) are gaps, noted in the title
            ax.plot(np.arange(len(y)), y, color=REGION_COLORS[region], lw=1.4, label=REGION_NAMES[region])
        n_inf = sum(1 for v in per_frame.get("full", {}).get(m, []) if v is not None and math.isinf(float(v)))
        ax.set_title(f"{METRICS[m].label} {arrow(m)}" + (f"  ({n_inf} ∞)" if n_inf else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.grid(alpha=0.3)
        ax.set_xlabel("frame", fontsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if title:
        fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    if len(labels) > 1:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7, frameon=False, ncol=len(labels))
    return _fig_png(fig)


def _overview_png(results: Sequence[EvalResult]) -> Optional[bytes]:
    """Per-video means of the frame metrics, one group of bars per video."""

    matplotlib.use("Agg")

    panels = [m for m in ("psnr", "ssim", "lpips", "face-cos") if any(m in v["metrics"].get("full", {}) for r in results for v in r.videos)]
    if not panels:
        return None
    names = [v["name"] for v in results[0].videos]
    n = len(names)
    fig, axes = plt.subplots(len(panels), 1, figsize=(min(12, max(7, 2 + 0.45 * n * len(results))), 1.5 * len(panels)), squeeze=False)
    width = 0.8 / len(results)
    colors = ["#2563eb", "#f59e0b", "#10b981", "#ef4444"]
    for ax, m in zip(axes[:, 0], panels):
        for k, res in enumerate(results):
            by = {v["name"]: v["metrics"].get("full", {}).get(m) for v in res.videos}
            y = [np.nan if by.get(nm) is None or math.isinf(float(by[nm])) else float(by[nm]) for nm in names]
            ax.bar(np.arange(n) + (k - (len(results) - 1) / 2) * width, y, width, color=colors[k % 4], label=res.label or f"run {k + 1}")
        ax.set_ylabel(f"{METRICS[m].label} {arrow(m)}", fontsize=8)
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels(names if m == panels[-1] else [], rotation=45 if n > 8 else 0, ha="right" if n > 8 else "center", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    if len(results) > 1:
        axes[0, 0].legend(fontsize=7, frameon=False, ncol=len(results))
    fig.tight_layout()
    return _fig_png(fig)


_CSS = """
:root{--ink:#0f172a;--mute:#64748b;--line:#e2e8f0;--bg:#f8fafc;--good:#15803d;--bad:#b91c1c;--acc:#2563eb}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
header{background:linear-gradient(120deg,#1e293b,#334155);color:#fff;padding:22px 32px}
header h1{margin:0 0 4px;font-size:22px}header .sub{color:#cbd5e1;font-size:13px}header code{background:rgba(255,255,255,.12);color:#f1f5f9}
table.legend td,table.legend th{text-align:left;white-space:normal}
main{max-width:1180px;margin:0 auto;padding:20px 24px 60px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:16px 0;box-shadow:0 1px 2px rgba(0,0,0,.03)}
h2{font-size:16px;margin:0 0 10px}h3{font-size:14px;margin:14px 0 6px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{flex:1 1 120px;background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .k{color:var(--mute);font-size:12px}.card .v{font-size:20px;font-weight:600}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{background:#f1f5f9;font-weight:600;font-size:12.5px}
thead tr.group th{background:#e2e8f0;text-align:center;font-size:12px;letter-spacing:.03em;text-transform:uppercase;color:#334155}
td.na{color:#94a3b8}td.good{color:var(--good);font-weight:600}td.bad{color:var(--bad);font-weight:600}
.note{color:var(--mute);font-size:12.5px}.warn{background:#fff7ed;border:1px solid #fed7aa;border-radius:8px;padding:8px 12px;margin:6px 0;font-size:13px}
.warn b{color:#9a3412}.up{color:var(--good)}.down{color:#b45309}
.video{border-top:1px solid var(--line);padding-top:12px;margin-top:12px}.video h3{margin:0 0 6px}
img.plot{max-width:100%;display:block;margin:6px 0}img.preview{max-width:100%;border-radius:6px;display:block;margin:6px 0}
code{background:#f1f5f9;padding:1px 4px;border-radius:4px}ul{margin:6px 0 0 18px;padding:0}
.scroll{overflow-x:auto}
"""


def _cell(metric, value, cls_extra="", title=""):
    cls = "na" if value is None else cls_extra
    t = f' title="{html.escape(title)}"' if title else ""
    return f'<td class="{cls}"{t}>{format_value(metric, value)}</td>'


def _paper_table(results: Sequence[EvalResult], layout, caption: str, footnote: bool = True) -> str:
    rows0 = paper_table_rows(results[0], layout)
    groups = []
    for g, *_ in rows0:
        if groups and groups[-1][0] == g:
            groups[-1][1] += 1
        else:
            groups.append([g, 1])
    head_g = "".join(f'<th colspan="{n}">{html.escape(g)}</th>' for g, n in groups)
    head_m = "".join(f"<th>{html.escape(lbl)} {arrow(m)}</th>" for _, lbl, m, _, _, _ in rows0)
    base = [r[4] for r in rows0]
    body = []
    for k, res in enumerate(results):
        cells = []
        for i, (g, lbl, m, region, value, used) in enumerate(paper_table_rows(res, layout)):
            title = ""
            if value is None:
                title = res.unavailable.get(m, "") or (f"not computed: add --masks {region}" if region in ("fg", "bg") and used is None else "not computed")
            elif used != region:
                title = "no foreground mask: computed on full frames"
            better = _better(m, base[i], value) if k > 0 else None
            cells.append(_cell(m, value, "" if better is None else ("good" if better else "bad"), title))
        body.append(f"<tr><td>{html.escape(res.label or 'generated')}</td>{''.join(cells)}</tr>")
    fg_missing = footnote and any("fg" not in r.regions for r in results) and any(row[1] == "fg" for row in layout)
    foot = '<p class="note">No foreground mask was used: "Foreground" columns show full-frame numbers. Run with <code>--masks fg,bg</code> for the paper\'s split.</p>' if fg_missing else ""
    return (
        f"<h3>{html.escape(caption)}</h3><div class='scroll'><table><thead><tr class='group'><th></th>{head_g}</tr>"
        f"<tr><th>Method</th>{head_m}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{foot}"
    )


def _all_numbers_table(results: Sequence[EvalResult]) -> str:
    metrics = [m for m in METRICS if any(m in r.metrics for r in results)]
    regions = [g for g in ("full", "fg", "bg") if any(g in r.regions for r in results)]
    head = "".join(f"<th>{METRICS[m].label} {arrow(m)}</th>" for m in metrics)
    body = []
    for res in results:
        for g in regions:
            if g not in res.regions:
                continue
            cells = "".join(
                _cell(m, res.aggregate.get(g, {}).get(m), title=res.unavailable.get(m, "")) if (METRICS[m].regions or g == "full") else "<td class='na'></td>"
                for m in metrics
            )
            name = f"{res.label + ' · ' if res.label else ''}{REGION_NAMES[g]}"
            body.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return f"<div class='scroll'><table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _legend(results) -> str:
    keys = [m for m in METRICS if any(m in r.metrics for r in results)]
    rows = "".join(
        f"<tr><td><b>{METRICS[m].label}</b></td><td style='white-space:nowrap'>{arrow(m)} {METRICS[m].direction} is better</td>"
        f"<td>{html.escape(METRICS[m].range)}</td><td>{html.escape(METRICS[m].backbone)}</td>"
        f"<td>{html.escape(METRICS[m].description)}</td></tr>"
        for m in keys
    )
    return f"<table class='legend'><thead><tr><th>Metric</th><th>Direction</th><th>Range</th><th>Backbone</th><th>What it measures</th></tr></thead><tbody>{rows}</tbody></table>"


def _videos_table(res: EvalResult) -> str:
    metrics = [m for m in ("l1", "psnr", "ssim", "lpips", "face-cos", "face-det") if m in res.metrics and m not in res.unavailable]
    head = "".join(f"<th>{METRICS[m].label} {arrow(m)}</th>" for m in metrics)
    body = []
    for v in res.videos:
        cells = "".join(_cell(m, v["metrics"].get("full", {}).get(m)) for m in metrics)
        note = "; ".join(v.get("notes") or [])
        body.append(
            f"<tr><td><a href='#v-{html.escape(v['name'])}'>{html.escape(v['name'])}</a></td><td>{v['frames']}</td>"
            f"<td>{v['size'][1]}×{v['size'][0]}</td>{cells}<td class='note' style='text-align:left;white-space:normal'>{html.escape(note)}</td></tr>"
        )
    return f"<div class='scroll'><table><thead><tr><th>Video</th><th>Frames</th><th>Size</th>{head}<th style='text-align:left'>Notes</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def render_report(results, path, title: str = "X-Dyna evaluation", max_videos: int = 60, plots_dir=None) -> Path:
    """Write the HTML report of one or more `EvalResult`s to `path` (atomically)."""
    results = [results] if isinstance(results, EvalResult) else list(results)
    if not results:
        raise ValueError("render_report needs at least one result")
    path = Path(path)
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        plots_dir.mkdir(parents=True, exist_ok=True)
    first = results[0]
    cfg = first.config
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sub = " · ".join(
        x
        for x in (
            f"generated: <code>{html.escape(str(cfg.get('generated_dir', '')))}</code>" if cfg.get("generated_dir") and len(results) == 1 else "",
            f"reference: <code>{html.escape(str(cfg.get('reference_dir', '')))}</code>" if cfg.get("reference_dir") else "",
            now,
        )
        if x
    )
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<header><h1>{html.escape(title)}</h1><div class='sub'>{sub}</div></header><main>")

    # Headline cards
    cards = [("Videos", str(first.counts.get("videos", len(first.videos)))), ("Frames compared", str(first.counts.get("frames", "")))]
    for m in ("psnr", "ssim", "lpips", "face-cos", "fid", "cdfvd"):
        if m in first.metrics:
            cards.append((f"{METRICS[m].label} {arrow(m)}", format_value(m, first.value(m))))
    parts.append("<section><div class='cards'>" + "".join(f"<div class='card'><div class='k'>{html.escape(k)}</div><div class='v'>{v}</div></div>" for k, v in cards) + "</div>")
    if len(results) > 1:
        parts.append("<p class='note'>Headline numbers are of the first row; in the tables <span class='up'>green</span> marks a later row that is better than the first, <span class='down'>red</span> worse.</p>")
    parts.append("</section>")

    # Unavailable metrics
    unav = {m: r for res in results for m, r in res.unavailable.items()}
    if unav:
        items = "".join(f"<div class='warn'><b>{html.escape(METRICS[m].label)} unavailable:</b> {html.escape(reason)}</div>" for m, reason in unav.items())
        parts.append(f"<section><h2>Metrics that could not be computed</h2>{items}</section>")

    parts.append("<section><h2>Results in the paper's layout</h2>")
    parts.append(_paper_table(results, PAPER_TABLE2, "Human animation (X-Dyna Table 2 layout)"))
    if any("dtfvd" in r.metrics or "fvd" in r.metrics for r in results):
        layout = PAPER_TABLE1 + ((("Other", "full", "fvd"),) if any("fvd" in r.metrics for r in results) else ())
        parts.append(_paper_table(results, layout, "Dynamics (X-Dyna Table 1 layout; FVD with I3D-Kinetics added)", footnote=False))
    parts.append("</section>")

    parts.append(f"<section><h2>All numbers</h2>{_all_numbers_table(results)}")
    idf = first.counts.get("psnr_identical_frames", {})
    if any(idf.values()):
        parts.append(f"<p class='note'>Frames identical to their reference (PSNR = ∞, left out of the PSNR means): {', '.join(f'{REGION_NAMES[k]} {v}' for k, v in idf.items())}.</p>")
    if "face-det_reference" in first.aggregate.get("full", {}):
        parts.append(f"<p class='note'>Face-Det of the reference videos (an upper bound for the detector): {format_value('face-det', first.aggregate['full']['face-det_reference'])}.</p>")
    samples = {k: v for k, v in first.counts.items() if k.endswith("_samples")}
    if samples:
        parts.append("<p class='note'>Samples per set metric (generated side): " + ", ".join(f"{METRICS[k[:-8]].label} {v.get('full', '')}" for k, v in samples.items()) + ". Fréchet distances from few samples are biased upwards; compare them only at equal sample counts.</p>")
    notes = [n for res in results for n in res.notes]
    if notes:
        parts.append("<ul>" + "".join(f"<li class='note'>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</section>")

    parts.append(f"<section><h2>Metrics: direction and range</h2>{_legend(results)}<h3>Rules</h3><ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in RULES.items()) + "</ul></section>")

    overview = _overview_png(results)
    parts.append("<section><h2>Per video</h2>")
    if overview:
        parts.append(_img_tag(overview, "per-video means", "plot"))
        if plots_dir is not None:
            (plots_dir / "overview.png").write_bytes(overview)
    for k, res in enumerate(results):
        if len(results) > 1:
            parts.append(f"<h3>{html.escape(res.label or f'run {k + 1}')}</h3>")
        parts.append(_videos_table(res))
    shown = first.videos[:max_videos]
    for v in shown:
        parts.append(f"<div class='video' id='v-{html.escape(v['name'])}'><h3>{html.escape(v['name'])}</h3>")
        if v.get("notes"):
            parts.append("<div class='note'>" + "; ".join(html.escape(n) for n in v["notes"]) + "</div>")
        for k, res in enumerate(results):
            match = next((x for x in res.videos if x["name"] == v["name"]), None)
            if match is None:
                continue
            if match.get("preview_jpeg"):
                parts.append(f"<img class='preview' alt='generated | reference | difference' src='data:image/jpeg;base64,{match['preview_jpeg']}'>")
            png = per_frame_plot_png(match, (res.label + ": ") if len(results) > 1 else "")
            if png:
                parts.append(_img_tag(png, f"per-frame metrics of {v['name']}", "plot"))
                if plots_dir is not None:
                    (plots_dir / f"{v['name']}{'_' + str(k) if len(results) > 1 else ''}.png").write_bytes(png)
        parts.append("</div>")
    if len(first.videos) > max_videos:
        parts.append(f"<p class='note'>Plots of the first {max_videos} of {len(first.videos)} videos are shown; every number is in the JSON output.</p>")
    parts.append("</section></main></body></html>")
    return _atomic_write_text(path, "".join(parts))
