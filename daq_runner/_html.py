"""Self-contained HTML pages: one run report (``daq-run show --html``), or a table of several
(``daq-run show --html R1.json R2.json ... -o fleet.html``).

Everything is inline (CSS, an SVG timeline); a Content-Security-Policy forbids any fetch, so
the page shows the same offline, from a mail attachment or an archive. Every text from the
report is escaped. Status is told by colour *and* by a symbol, a word and a bar pattern.
"""

from __future__ import annotations

import math
import os
from html import escape
from typing import Any, Dict, List, Optional, Tuple

from ._digest import (
    as_text,
    attempts_of,
    check_of,
    command_of,
    daq_of,
    digest,
    failed_steps,
    failure_groups,
    headline,
    liveness,
    recoveries_of,
    resume_hint,
    said_once,
    suspensions_of,
)
from ._tally import SUMMARY_KEYS, format_bytes, format_moment, format_seconds
from ._text import plural, said_with_source
from .record import CONFIRMATIONS, KEPT, WEAK_CONFIRMATIONS, StepRecord
from .daq import DRIVER

__all__ = ["render", "render_runs"]

MAX_ROWS = 400  # timeline rows; beyond them the steps that did not pass are preferred

_SYMBOL = {"passed": "✓", "failed": "✗", "interrupted": "■", "skipped": "–", "running": "…", "killed": "■"}
_COLOR = {"passed": "#2e7d32", "failed": "#c62828", "interrupted": "#e65100", "skipped": "#9e9e9e", "running": "#1565c0", "killed": "#e65100"}
_FILL = {"passed": "#43a047", "failed": "url(#hatch-failed)", "interrupted": "url(#dots-interrupted)", "skipped": "#e0e0e0"}

_CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#ffffff; --panel:#f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
h2 { font-size: 16px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.badge { display: inline-block; padding: 3px 12px; border-radius: 14px; color: #fff; font-size: 15px; letter-spacing: .04em; }
.reason { margin: 8px 0 0; padding: 10px 14px; border-left: 4px solid; background: var(--panel); border-radius: 0 6px 6px 0; white-space: pre-wrap; word-break: break-word; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-top: 18px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
.card .v { font-size: 20px; font-weight: 600; margin-top: 2px; }
.card .s { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 10px 5px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.facts th { width: 170px; text-transform: none; letter-spacing: 0; font-size: 13px; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; word-break: break-all; }
.muted { color: var(--muted); }
.warn { color: #b45309; font-weight: 600; }
.legend { display: flex; gap: 18px; flex-wrap: wrap; margin: 6px 0 10px; font-size: 13px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.legend svg { vertical-align: middle; }
.timeline { width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 8px; background: #fff; }
.rate { display: flex; align-items: center; gap: 8px; }
.rate .bar { height: 10px; background: #1e88e5; border-radius: 2px; min-width: 1px; }
.fail { border: 1px solid var(--line); border-left: 4px solid #c62828; border-radius: 0 6px 6px 0; padding: 8px 12px; margin: 8px 0; background: #fff; }
.fail.interrupted { border-left-color: #e65100; }
.fail.retried { border-left-color: #f9a825; }
.fail .err { white-space: pre-wrap; word-break: break-word; margin-top: 4px; }
.fail ul { margin: 6px 0 0; padding-left: 20px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _ticks(span: float) -> Tuple[float, List[float]]:
    """A round tick step giving at most about 8 ticks over ``span`` seconds."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400):
        if span / step <= 8:
            break
    else:  # longer than 8 days (or absurd times in a hand-made report): whole days, still 8 ticks
        step = 86400 * math.ceil(span / 8 / 86400) if math.isfinite(span) else 86400
    count = min(int(math.floor(span / step)) + 1, 10) if math.isfinite(span) else 1
    return step, [i * step for i in range(count)]


def _clock(seconds: float, step: float) -> str:
    """A tick of the timeline, from the run's start, with its unit: ``+0.5 s``, ``+30 s``,
    ``+2 min``, ``+1 min 30 s``, ``+1 h 05 min`` (a bare ``0:02`` reads as minutes)."""
    if step < 1:
        return f"+{seconds:.1f} s"
    total = int(round(seconds))
    if total < 60:
        return f"+{total} s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"+{hours} h" + (f" {minutes:02d} min" if minutes or secs else "")
    return f"+{minutes} min" + (f" {secs:02d} s" if secs else "")


def _swatch(status: str) -> str:
    fill = _FILL.get(status, "#bbb")
    stroke = _COLOR.get(status, "#888")
    return (
        f'<svg width="28" height="14" aria-hidden="true"><rect x="0.5" y="0.5" width="27" height="13" rx="2" '
        f'fill="{fill}" stroke="{stroke}"/></svg>'
    )


def _defs() -> str:
    return (
        "<defs>"
        '<pattern id="hatch-failed" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#e57373"/><rect width="3" height="6" fill="#c62828"/></pattern>'
        '<pattern id="dots-interrupted" width="5" height="5" patternUnits="userSpaceOnUse">'
        '<rect width="5" height="5" fill="#ffb74d"/><circle cx="2.5" cy="2.5" r="1.3" fill="#e65100"/></pattern>'
        '<pattern id="hatch-suspended" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)">'
        '<rect width="6" height="6" fill="#eceff1"/><rect width="2" height="6" fill="#607d8b"/></pattern>'
        "</defs>"
    )


def _rows(steps: List[StepRecord]) -> Tuple[List[StepRecord], int]:
    steps = sorted(steps, key=lambda s: s.index)  # a background write is recorded when it ends
    if len(steps) <= MAX_ROWS:
        return steps, 0
    problems = {id(s) for s in steps if s.status.value != "passed"}
    keep = [s for s in steps if id(s) in problems][:MAX_ROWS]
    room = MAX_ROWS - len(keep)
    keep_ids = {id(s) for s in keep} | {id(s) for s in [s for s in steps if id(s) not in problems][:room]}
    shown = [s for s in steps if id(s) in keep_ids]
    return shown, len(steps) - len(shown)


def _timeline(d: Dict[str, Any]) -> str:
    steps, hidden = _rows(d["steps"])
    timed = [s for s in steps if s.started_at is not None and not s.resumed]  # a kept step ran in the run resumed
    t0 = d["started"] if d["started"] is not None else min((s.started_at for s in timed), default=None)
    ends = [s.finished_at for s in timed if s.finished_at is not None] + ([d["finished"]] if d["finished"] is not None else [])
    if t0 is None or not steps:
        return '<p class="muted">No step has a start time: nothing to draw.</p>'
    t1 = max(ends + [t0 + 1e-3])
    span = max(t1 - t0, 1e-3)
    label_w, plot_w, right, row_h, top = 300, 640, 20, 20, 30
    width = label_w + plot_w + right
    height = top + row_h * len(steps) + 12

    def x(t: float) -> float:
        return label_w + (t - t0) / span * plot_w

    step_s, ticks = _ticks(span)
    out = [
        f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" aria-label="timeline of {len(steps)} steps" '
        'font-family="system-ui, sans-serif" font-size="12">',
    ]
    for tick in ticks:
        px = label_w + tick / span * plot_w
        out.append(f'<line x1="{px:.1f}" y1="{top - 6}" x2="{px:.1f}" y2="{height - 8}" stroke="#eaeef2"/>')
        out.append(f'<text x="{px:.1f}" y="{top - 12}" text-anchor="middle" fill="#656d76">{_e(_clock(tick, step_s))}</text>')
    for row, step in enumerate(steps):
        y = top + row * row_h
        status = step.status.value
        color = _COLOR.get(status, "#888")
        if row % 2:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f6f8fa"/>')
        full = as_text(step.name) or ""
        name, output_file = full, as_text(step.output_file)
        if output_file and output_file in name:  # the folder is the same all night: keep the file name
            name = name.replace(output_file, os.path.basename(output_file))
        name = name if len(name) <= 34 else name[:33] + "…"
        out.append(
            f'<text x="8" y="{y + 14}" fill="{color}" font-weight="600">{_e(_SYMBOL.get(status, "?"))}</text>'
            f'<text x="24" y="{y + 14}" fill="#1f2328"><tspan fill="#656d76">{step.index}</tspan> {_e(name)}'
            f"<title>{_e(full)}</title></text>"
        )
        tip = f"step {step.index} {full}: {KEPT if step.resumed else status}"
        if step.started_at is not None and step.duration_s is not None:
            tip += f", {format_seconds(step.duration_s)}"
        if step.attempts > 1:
            tip += f", {step.attempts} attempts"
        if step.stopped_on_purpose:
            tip += f", {step.stopped_on_purpose}"
        if step.error:
            tip += f"\n{as_text(step.error)}"
        if step.started_at is not None and not step.resumed:
            x0 = x(step.started_at)
            x1 = max(x(step.finished_at if step.finished_at is not None else t1), x0 + 2)
            out.append(
                f'<rect x="{x0:.1f}" y="{y + 4}" width="{x1 - x0:.1f}" height="{row_h - 8}" rx="2" fill="{_FILL.get(status, "#bbb")}" '
                f'stroke="{color}" stroke-width="0.8"><title>{_e(tip)}</title></rect>'
            )
            after = x1 + 4
            if step.attempts > 1:
                label = f"×{step.attempts}"
                out.append(f'<text x="{after:.1f}" y="{y + 14}" fill="#c62828" font-size="11">{_e(label)}<title>{_e(tip)}</title></text>')
        else:
            why = KEPT if step.resumed else (as_text(step.error) or status)
            out.append(
                f'<text x="{label_w + 4}" y="{y + 14}" fill="#8c959f" font-style="italic" font-size="11">{_e(why[:90])}<title>{_e(tip)}</title></text>'
            )
        if step.resumed:
            continue  # its attempts and recoveries were in the run resumed, before this timeline
        for attempt in attempts_of(step):
            if attempt["at"] is not None:
                ax = x(attempt["at"])
                text = f"attempt {attempt['attempt']} failed: {attempt['error']}"
                out.append(
                    f'<path d="M{ax - 4:.1f},{y + 3} L{ax + 4:.1f},{y + row_h - 3} M{ax + 4:.1f},{y + 3} L{ax - 4:.1f},{y + row_h - 3}" '
                    f'stroke="#b71c1c" stroke-width="2"><title>{_e(text)}</title></path>'
                )
        for pause in suspensions_of(step):
            if pause["suspended_at"] is not None:
                sx = x(pause["suspended_at"])
                ex = x(pause["resumed_at"] if pause["resumed_at"] is not None else (step.finished_at if step.finished_at is not None else t1))
                text = f"suspended: {pause['reason']}; acquisition {pause['run_id']} left {pause['n_written']} images (incomplete)"
                out.append(
                    f'<rect x="{sx:.1f}" y="{y + 2}" width="{max(ex - sx, 2):.1f}" height="{row_h - 4}" fill="url(#hatch-suspended)" '
                    f'stroke="#455a64" stroke-width="0.8"><title>{_e(text)}</title></rect>'
                )
        for recovery in recoveries_of(step):
            if recovery["at"] is not None:
                rx = x(recovery["at"])
                text = f"recovery ({recovery['reason']}): {recovery['action']} -> {recovery['outcome']}"
                out.append(
                    f'<path d="M{rx:.1f},{y + 2} L{rx + 6:.1f},{y + row_h / 2} L{rx:.1f},{y + row_h - 2} L{rx - 6:.1f},{y + row_h / 2} Z" '
                    f'fill="#fb8c00" stroke="#fff" stroke-width="1"><title>{_e(text)}</title></path>'
                )
    out.append("</svg>")
    note = f'<p class="muted">{hidden} passed steps are not drawn (the steps that did not pass all are).</p>' if hidden else ""
    return "\n".join(out) + note


def _legend() -> str:
    items = [f"<span>{_swatch(s)} {_SYMBOL[s]} {s}</span>" for s in SUMMARY_KEYS]
    items.append(
        '<span><svg width="14" height="14" aria-hidden="true"><path d="M3,2 L11,12 M11,2 L3,12" stroke="#b71c1c" stroke-width="2"/></svg>'
        " failed attempt (retried)</span>"
    )
    items.append('<span><svg width="14" height="14" aria-hidden="true"><path d="M7,1 L13,7 L7,13 L1,7 Z" fill="#fb8c00"/></svg> recovery</span>')
    items.append(
        '<span><svg width="28" height="14" aria-hidden="true"><rect x="0.5" y="0.5" width="27" height="13" fill="url(#hatch-suspended)" '
        'stroke="#455a64"/></svg> suspended (the detector stopped delivering)</span>'
    )
    items.append('<span><b style="color:#c62828">×3</b> attempts</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def _card(key: str, value: str, sub: str = "") -> str:
    return f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div><div class="s">{_e(sub)}</div></div>'


def _moment(ts: Optional[float]) -> str:
    return format_moment(ts) if ts is not None else ""


def _facts(d: Dict[str, Any]) -> str:
    def source(value: Optional[str], where: Optional[str]) -> str:
        if not value:
            return f'<span class="muted">{_e(said_with_source(value, where))}</span>'
        return f'<span class="mono">{_e(value)}</span>' + (f' <span class="muted">(from {_e(where)})</span>' if where else "")

    rows = [
        ("Batch", f'{_e(d["batch_name"])} <span class="mono muted">{_e(d["batch_path"] or "")}</span>'),
        ("Variables", ", ".join(f'<span class="mono">{_e(as_text(k))}={_e(as_text(v))}</span>' for k, v in d["vars"].items()) or '<span class="muted">none</span>'),
        ("Started", _e(_moment(d["started"]) or "unknown")),
        ("Finished", _e(_moment(d["finished"]) or "not finished")),
        ("DAQ", source(d["daq_url"], d["url_source"]) + (' <span class="muted">the current generation (std_det_driver)</span>' if d["generation"] == DRIVER else "")),
        *([("Config REST", source(d["config_url"], d["config_url_source"]) + (f' <span class="muted">as {_e(d["config_user"])}</span>' if d["config_user"] else ""))] if d["config_url"] else []),
        ("Redis", source(d["redis"], d["redis_source"])),
        ("Run", f'<span class="mono">{_e(d["run_id"] or "?")}</span>'),
        ("By", _e(" on ".join(x for x in (d["user"], d["host"]) if x) or "?") + (f' <span class="muted">(pid {d["pid"]})</span>' if d["pid"] is not None else "")),
        ("Command", f'<span class="mono">{_e(" ".join(d["command"]))}</span>' if d["command"] else '<span class="muted">not from the command line</span>'),
        ("Software", _e(" · ".join(x for x in (d["daq_runner"] and f"daq-runner {d['daq_runner']}", d["python"] and f"Python {d['python']}") if x) or "?")),
    ]
    return '<table class="facts">' + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _attempt_items(step: StepRecord) -> List[str]:
    """What a step's failed attempts and recoveries said, each text once."""
    items = [f"<li>{_e(label)}: {_e(error)}</li>" for label, error in said_once(step)]
    said = {a["error"]: f"attempt {a['attempt']}'s failure" for a in attempts_of(step)}
    said[as_text(step.error) or ""] = "its failure"
    for r in recoveries_of(step):
        why = said.get(r["reason"] or "", r["reason"])
        items.append(f"<li>recovery ({_e(why)}): {_e(r['action'])} → {_e(r['outcome'])}</li>")
    return items


def _failures(d: Dict[str, Any]) -> str:
    groups = failure_groups(d["steps"])
    retried = [s for s in d["steps"] if s.status.value == "passed" and s.failed_attempts]
    if not groups and not retried:
        return ""
    out = ["<h2>Failures and retries</h2>"]
    for group in groups[:100]:
        klass = "fail interrupted" if group.status == "interrupted" else "fail"
        first = group.steps[0]
        said_above = d["reason"] is not None and as_text(first.problem) == d["reason"]
        if len(group.steps) == 1:
            head = f"{_SYMBOL.get(group.status, '?')} step {first.index} {group.status}"
            attempts = plural(first.attempts, "attempt")
            if first.attempts > 1 and not said_once(first):
                attempts += ", each failed the same way"
            if first.started and first.images_written is not None and first.n_images is not None and not said_above:
                attempts += f"; {first.images_written} of {first.n_images} images written"
            title = f"<b>{_e(head)}</b>: {_e(as_text(first.name))} <span class=\"muted\">({_e(attempts)})</span>"
            names = ""
        else:
            head = f"{_SYMBOL.get(group.status, '?')} {len(group.steps)} steps {group.status} the same way"
            title = f"<b>{_e(head)}</b>"
            names = "<ul>" + "".join(
                f"<li>step {s.index}: {_e(as_text(s.name))} <span class=\"muted\">({plural(s.attempts, 'attempt')})</span></li>"
                for s in group.steps[:100]
            ) + (f"<li class=\"muted\">… and {len(group.steps) - 100} more</li>" if len(group.steps) > 100 else "") + "</ul>"
        error = '<div class="muted">the reason above</div>' if said_above and len(group.steps) == 1 else f'<div class="err mono">{_e(group.error)}</div>'
        items = [item for step in group.steps[:100] for item in _attempt_items(step)]
        out.append(f'<div class="{klass}">{title}{error}{names}' + (f"<ul>{''.join(items)}</ul>" if items else "") + "</div>")
    for step in retried[:100]:
        items = _attempt_items(step)
        out.append(
            f'<div class="fail retried"><b>✓ step {step.index} passed on attempt {step.attempts}</b>: {_e(as_text(step.name))}'
            + (f"<ul>{''.join(items)}</ul>" if items else "") + "</div>"
        )
    rest = len(groups[100:]) + len(retried[100:])
    if rest:
        out.append(f'<p class="muted">… and {rest} more in the report.</p>')
    return "\n".join(out)


def _throughput(d: Dict[str, Any]) -> str:
    writes = sorted((s for s in d["steps"] if s.kind == "write" and s.status.value != "skipped"), key=lambda s: s.index)
    if not writes:
        return ""
    top = max((s.images_per_s or 0 for s in writes), default=0) or 1
    rows = []
    for step in writes[:MAX_ROWS]:
        rate = step.images_per_s
        written = step.images_written
        bar = f'<div class="bar" style="width:{max(rate / top * 220, 1):.0f}px"></div>' if rate else ""
        output_file = as_text(step.output_file) or ""
        name = os.path.basename(output_file) or as_text(step.name)
        images = "?" if written is None else f"{written:,}"
        if step.n_images is not None and written != step.n_images:
            images += f" / {step.n_images:,}"
        note = step.stopped_on_purpose or ("nothing started" if step.started is False else "")
        confirmed = CONFIRMATIONS.get(as_text(step.confirmed_by) or "", "")
        rows.append(
            f"<tr><td class=num>{step.index}</td><td><span style=\"color:{_COLOR.get(step.status.value, '#888')}\">{_e(_SYMBOL.get(step.status.value, '?'))}</span> "
            f'<span class="mono" title="{_e(output_file)}">{_e(name)}</span>' + (f'<div class="muted">{_e(note)}</div>' if note else "") + "</td>"
            f"<td class=num>{_e(images)}</td>"
            f"<td class=num>{_e(step.bit_depth if step.bit_depth is not None else '?')}</td>"
            f"<td class=num>{_e(format_seconds(step.duration_s) if step.duration_s is not None else '?')}</td>"
            f'<td><div class="rate"><span class="num" style="min-width:70px;text-align:right">{_e(f"{rate:,.0f}" if rate else "–")}</span>{bar}</div></td>'
            f'<td class="{"warn" if step.confirmed_by in WEAK_CONFIRMATIONS else "muted"}">{_e(confirmed)}</td></tr>'
        )
    more = f'<p class="muted">{len(writes) - MAX_ROWS} more writes in the report.</p>' if len(writes) > MAX_ROWS else ""
    return (
        "<h2>Images per second, per write</h2>"
        "<table><tr><th class=num>Step</th><th>File</th><th class=num>Images</th><th class=num>Bit depth</th><th class=num>Step time</th>"
        "<th>Images/s (acquisition)</th><th>Confirmed by</th></tr>"
        + "".join(rows)
        + "</table>"
        + more
    )


_CHECK_SHOWN = {"passed": ("✓ checked", "#2e7d32"), "failed": ("✗ check failed", "#c62828"), "not_checked": ("– not checked", "#656d76")}


def _check_cell(check: Optional[Dict[str, Any]]) -> str:
    if check is None:
        return '<td class="muted">–</td>'
    word, color = _CHECK_SHOWN.get(check["status"], (check["status"], "#656d76"))
    return f'<td style="color:{color}" title="{_e(check["reason"])}">{_e(word)}' + (
        f'<div class="muted">{_e(check["reason"])}</div>' if check["status"] != "passed" else ""
    ) + "</td>"


def _files(d: Dict[str, Any]) -> str:
    if not d["files"]:
        return ""
    checks = {s.index: check_of(s) for s in d["steps"] if check_of(s) is not None}
    rows = []
    for entry in d["files"][:1000]:
        size = entry.get("size_bytes")
        rows.append(
            f'<tr><td class="mono">{_e(as_text(entry.get("path")))}{" <strong>(incomplete)</strong>" if entry.get("complete") is False else ""}</td>'
            f'<td class=num>{_e(entry.get("n_images") if entry.get("n_images") is not None else "?")}</td>'
            f"<td class=num>{_e(format_bytes(size) if isinstance(size, int) else 'not visible here')}</td><td class=num>{_e(entry.get('step'))}</td>"
            + _check_cell(checks.get(entry.get("step")))
            + f'<td class="mono muted">{_e(as_text(entry.get("run_id")) or "")}</td></tr>'
        )
    more = f'<p class="muted">{len(d["files"]) - 1000} more files in the report.</p>' if len(d["files"]) > 1000 else ""
    return (
        f"<h2>Files written ({len(d['files'])})</h2><table><tr><th>Path</th><th class=num>Images</th><th class=num>Size</th>"
        f"<th class=num>Step</th><th>File check</th><th>Run id</th></tr>" + "".join(rows) + "</table>" + more
    )


def _suspensions(d: Dict[str, Any]) -> str:
    steps = [s for s in d["steps"] if suspensions_of(s)]
    if not steps:
        return ""
    rows = []
    for step in steps[:MAX_ROWS]:
        for pause in suspensions_of(step):
            rows.append(
                f"<tr><td class=num>{step.index}</td><td class=mono>{_e(_moment(pause['suspended_at']) or '?')}</td>"
                f"<td class=mono>{_e(_moment(pause['resumed_at']) or 'never resumed')}</td><td>{_e(pause['reason'])}</td>"
                f"<td class=num>{_e(pause['n_written'] if pause['n_written'] is not None else '?')}</td><td class=\"mono muted\">{_e(pause['run_id'] or '')}</td></tr>"
            )
    return (
        "<h2>Writes suspended (the detector stopped delivering)</h2>"
        "<table><tr><th class=num>Step</th><th>Suspended</th><th>Resumed</th><th>Why</th>"
        "<th class=num>Images left (incomplete file)</th><th>Acquisition</th></tr>" + "".join(rows) + "</table>"
    )


def _programs(d: Dict[str, Any]) -> str:
    steps = [(s, command_of(s)) for s in d["steps"] if command_of(s) is not None]
    if not steps:
        return ""
    rows = []
    for step, command in steps[:MAX_ROWS]:
        output = "\n".join(command["output"])
        shown = f'<pre class="mono" style="margin:4px 0 0;white-space:pre-wrap">{_e(output)}</pre>' if output else ""
        rows.append(
            f"<tr><td class=num>{step.index}</td><td><span style=\"color:{_COLOR.get(step.status.value, '#888')}\">{_e(_SYMBOL.get(step.status.value, '?'))}</span> "
            f'<span class="mono">{_e(as_text(step.name))}</span></td><td class=num>{_e(command["exit_code"] if command["exit_code"] is not None else "–")}</td>'
            f"<td>{_e(command['reason'])}{shown}</td></tr>"
        )
    return (
        "<h2>Programs run</h2><table><tr><th class=num>Step</th><th>Command</th><th class=num>Exit</th><th>Result and last output</th></tr>"
        + "".join(rows) + "</table>"
    )


def _notices(d: Dict[str, Any]) -> str:
    if not d["notices"] and not d["recoveries"]:
        return ""
    rows = [
        f"<tr><td class=mono>{_e(_moment(n['at']))}</td><td class=num>{_e(n['step'] if n['step'] is not None else 'run')}</td><td>{_e(n['message'])}</td></tr>"
        for n in d["notices"]
    ]
    rows = [
        f"<tr><td class=mono>{_e(_moment(r['at']))}</td><td class=num>run</td><td>recovery: {_e(r['reason'])} → {_e(r['action'])} ({_e(r['outcome'])})</td></tr>"
        for r in d["recoveries"]
    ] + rows
    omitted = f'<p class="muted">{plural(d["notices_omitted"], "notice")} between these were left out of the report.</p>' if d["notices_omitted"] else ""
    return "<h2>Notices</h2><table><tr><th>At</th><th class=num>Step</th><th>Message</th></tr>" + "".join(rows) + "</table>" + omitted


def _cleanup(d: Dict[str, Any]) -> str:
    cleanup = d["cleanup"]
    if cleanup is None:
        return ""
    color = _COLOR.get(cleanup["status"], "#555")
    rows = [
        f"<tr><td class=num>{step.index}</td><td><span style=\"color:{_COLOR.get(step.status.value, '#888')}\">{_e(_SYMBOL.get(step.status.value, '?'))} {_e(step.status.value)}</span></td>"
        f"<td>{_e(as_text(step.name))}</td><td>{_e(as_text(step.error) if step.status.value != 'passed' else '')}</td></tr>"
        for step in cleanup["steps"][:MAX_ROWS]
    ]
    restore = cleanup["restore"]
    restored = ""
    if restore is not None:
        fields = ", ".join(f"{as_text(k)}={as_text(v)}" for k, v in restore["fields"].items())
        restored = f'<p>restore_config: <b>{_e(restore["outcome"])}</b>' + (f' <span class="mono">{_e(fields)}</span>' if fields else "") + (
            f' — {_e(restore["error"])}' if restore["error"] else ""
        ) + "</p>"
    reason = f" — {_e(cleanup['reason'])}" if cleanup["reason"] else ""
    table = "<table><tr><th class=num>Step</th><th>Status</th><th>Name</th><th>Error</th></tr>" + "".join(rows) + "</table>" if rows else ""
    return f'<h2>Cleanup</h2><p><b style="color:{color}">{_e(cleanup["status"])}</b>{reason}</p>{table}{restored}'


def _page(title: str, body: str) -> str:
    """A whole page: ``body`` under a head that forbids every fetch (the page shows the same offline)."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
{body}</body>
</html>
"""


def render(report: Dict[str, Any], path: Optional[str] = None) -> str:
    """The HTML page of a loaded report (any daq-run version); ``path``: where the report was
    read from (for the command that continues the run)."""
    d = digest(report)
    live = liveness(d)
    word, reason = headline(d, live)
    status = "killed" if word == "KILLED" else d["status"]
    color = _COLOR.get(status, "#555")
    summary = d["summary"]
    counts = " · ".join(
        f"{_SYMBOL.get(k, _SYMBOL['running'])} {summary[k]} {k}" + (f" ({d['kept']} kept)" if k == "passed" and d["kept"] else "")
        for k in (*SUMMARY_KEYS, "pending")
        if summary.get(k)
    ) or "no step"
    duration = format_seconds(d["duration_s"]) if d["duration_s"] is not None else "unknown"
    rates = [s.images_per_s for s in d["steps"] if s.images_per_s]
    expected = d["estimate"]
    estimated = ""
    if expected is not None and expected["duration_s"] is not None:
        estimated = f"estimated {format_seconds(expected['duration_s'])}"
    n_files = len(d["files"])
    if not n_files:
        sizes = "no file written"
    elif d["bytes"] is None:
        sizes = "sizes not visible here"
    else:
        sizes = format_bytes(d["bytes"]) + (f" ({d['sizes_unknown']} not visible here)" if d["sizes_unknown"] else "")
    cards = [
        _card("Steps", str(d["n_steps"]), counts),
        _card("Duration", duration, " · ".join(x for x in (_moment(d["started"]), estimated) if x)),
        _card("Images", f"{d['images']:,}", f"{max(rates):,.0f} images/s at best" if rates else ""),
        _card("Files", str(n_files), sizes),
        _card("Failed attempts", str(d["retries"]), plural(sum(len(s.recoveries) for s in d["steps"]) + len(d["recoveries"]), "recovery", "recoveries")),
    ]
    box = f'<div class="reason" style="border-color:{color}">{_e(reason)}</div>' if reason else ""
    hint = resume_hint(d, path, live)
    if hint:
        box += f'<p>To continue the run (the steps that passed are kept, the others run again):</p><pre class="mono reason">{_e(hint)}</pre>'
    title = f"daq-run {word.lower()}: {d['batch_name']}"
    return _page(title, f"""<svg width="0" height="0" style="position:absolute" aria-hidden="true">{_defs()}</svg>
<main>
<h1><span class="badge" style="background:{color}">{_e(_SYMBOL.get(status, "?"))} {_e(word)}</span> {_e(d["batch_name"])}</h1>
{box}
<div class="cards">{"".join(cards)}</div>
<h2>Timeline</h2>
{_legend()}
{_timeline(d)}
{_failures(d)}
{_suspensions(d)}
{_throughput(d)}
{_programs(d)}
{_files(d)}
{_cleanup(d)}
{_notices(d)}
<h2>Run</h2>
{_facts(d)}
<footer>daq-run show · report of run {_e(d["run_id"] or "?")} · times in {_e(_zone())}</footer>
</main>
""")


def _zone() -> str:
    """Which times the page gives: ``local time (CET) and UTC``, or ``UTC``."""
    import time

    local = time.localtime()
    return "UTC" if local.tm_gmtoff == 0 else f"local time ({time.strftime('%Z', local)}) and UTC"


def render_runs(runs: List[Any], folder: str) -> str:
    """One page of several runs (:class:`daq_runner.show.Run` objects): a verdict, then a row per
    run with its status, DAQ, batch, start, duration, images, files and failed steps, and a link
    to its report (relative to ``folder``, where the page goes)."""
    passed = sum(1 for run in runs if run.passed)
    verdict = "passed" if passed == len(runs) else "failed"
    color = _COLOR[verdict]
    rows = []
    for run in runs:
        try:
            link = os.path.relpath(os.path.abspath(run.path), folder)
        except ValueError:  # another drive (Windows)
            link = os.path.abspath(run.path)
        href = _e(link.replace(os.sep, "/"))
        d = run.digest
        if d is None:
            rows.append(
                f'<tr><td><span style="color:{_COLOR["failed"]}">✗ unreadable</span></td><td colspan=6>{_e(run.problem)}</td>'
                f'<td class="mono"><a href="{href}">{_e(os.path.basename(run.path))}</a></td></tr>'
            )
            continue
        status = d["status"]
        word = headline(d, liveness(d))[0].lower() if status == "running" else status
        rows.append(
            f'<tr><td><span style="color:{_COLOR.get(word, _COLOR.get(status, "#555"))}">{_e(_SYMBOL.get(word, "?"))} {_e(word)}</span></td>'
            f'<td class="mono">{_e(daq_of(d))}</td><td>{_e(d["batch_name"])}</td><td class="mono">{_e(_moment(d["started"]) or "?")}</td>'
            f'<td class=num>{_e(format_seconds(d["duration_s"]) if d["duration_s"] is not None else "?")}</td>'
            f'<td class=num>{d["images"]:,}</td><td>{_e(failed_steps(d))}</td>'
            f'<td class="mono"><a href="{href}">{_e(os.path.basename(run.path))}</a></td></tr>'
        )
    title = f"daq-run: {passed} of {plural(len(runs), 'run')} passed"
    return _page(title, f"""<main>
<h1><span class="badge" style="background:{color}">{_e(_SYMBOL[verdict])} {_e("ALL PASSED" if verdict == "passed" else "NOT ALL PASSED")}</span> {_e(title)}</h1>
<table>
<tr><th>Status</th><th>DAQ</th><th>Batch</th><th>Started</th><th class=num>Duration</th><th class=num>Images</th><th>Failed steps</th><th>Report</th></tr>
{"".join(rows)}
</table>
<footer>daq-run show · {len(runs)} reports · times in {_e(_zone())}</footer>
</main>
""")
