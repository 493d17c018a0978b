"""Hand-written SVG charts (no plotting library).

line_chart() stacks one or more panels that share the x axis; each panel
has its own y axis and any number of series (name, [(x, y), ...]), drawn as
polylines, or as a dashed horizontal line when a series is a single number.
bar_panels() draws one bar per label in stacked panels (one metric each),
with optional min–max whiskers, for figures measured in several rounds.
"""

import math
from html import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"]
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def nice_ticks(lo, hi, n=5):
    """Round tick values covering [lo, hi] (about |n| of them)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = mag
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            step = m * mag
            break
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def fmt_num(v):
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a == int(a):
        return f"{int(v):,}"
    return f"{v:g}"


def fmt_label(v):
    """A value label on a bar: 3 significant figures or so."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e3:
        return f"{v / 1e3:.1f}k"
    if a == int(a):
        return f"{int(v)}"
    return f"{v:.1f}"


def line_chart(path, title, panels, xlabel="seconds", width=900, panel_h=240,
               subtitle=None):
    """Write an SVG with |panels| stacked vertically.

    panels: [{"ylabel": str, "series": [(name, points or number), ...],
              "ymin": optional, "ymax": optional}]
    """
    left, right, top, gap, bottom = 80, 190, 56 if subtitle else 40, 34, 44
    height = top + len(panels) * panel_h + (len(panels) - 1) * gap + bottom
    pw = width - left - right
    xs = [p[0] for pan in panels for _, pts in pan["series"]
          if isinstance(pts, list) for p in pts]
    xmax = max(xs) if xs else 1.0
    xticks = nice_ticks(0.0, xmax, 8)
    xhi = xticks[-1]
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}'>",
           f"<rect width='100%' height='100%' fill='white'/>",
           f"<text x='{left}' y='24' font-size='16' font-weight='bold' {FONT}>"
           f"{escape(title)}</text>"]
    if subtitle:
        out.append(f"<text x='{left}' y='42' font-size='11' fill='#555' {FONT}>"
                   f"{escape(subtitle)}</text>")
    color_of = {}
    for pi, pan in enumerate(panels):
        y0 = top + pi * (panel_h + gap)
        ph = panel_h
        ys = [p[1] for _, pts in pan["series"] if isinstance(pts, list) for p in pts]
        ys += [pts for _, pts in pan["series"] if isinstance(pts, (int, float))]
        ylo = pan.get("ymin", 0.0)
        yhi = pan.get("ymax", max(ys) if ys else 1.0)
        yticks = nice_ticks(ylo, yhi if yhi > ylo else ylo + 1, 5)
        ylo, yhi = yticks[0], yticks[-1]

        def X(x):
            return left + pw * (x / xhi if xhi else 0)

        def Y(y, ylo=ylo, yhi=yhi, y0=y0, ph=ph):
            return y0 + ph - ph * ((y - ylo) / (yhi - ylo) if yhi > ylo else 0)

        out.append(f"<rect x='{left}' y='{y0}' width='{pw}' height='{ph}' fill='none' "
                   f"stroke='#888'/>")
        for t in yticks:
            yy = Y(t)
            out.append(f"<line x1='{left}' x2='{left + pw}' y1='{yy:.1f}' y2='{yy:.1f}' "
                       f"stroke='#e4e4e4'/>")
            out.append(f"<text x='{left - 6}' y='{yy + 4:.1f}' font-size='11' "
                       f"text-anchor='end' {FONT}>{fmt_num(t)}</text>")
        for t in xticks:
            xx = X(t)
            out.append(f"<line x1='{xx:.1f}' x2='{xx:.1f}' y1='{y0}' y2='{y0 + ph}' "
                       f"stroke='#f0f0f0'/>")
            if pi == len(panels) - 1:
                out.append(f"<text x='{xx:.1f}' y='{y0 + ph + 16}' font-size='11' "
                           f"text-anchor='middle' {FONT}>{fmt_num(t)}</text>")
        out.append(f"<text transform='translate(18,{y0 + ph / 2:.0f}) rotate(-90)' "
                   f"font-size='12' text-anchor='middle' {FONT}>"
                   f"{escape(pan['ylabel'])}</text>")
        ly = y0 + 14
        for name, pts in pan["series"]:
            if name not in color_of:
                color_of[name] = PALETTE[len(color_of) % len(PALETTE)]
            col = color_of[name]
            if isinstance(pts, (int, float)):
                yy = Y(pts)
                out.append(f"<line x1='{left}' x2='{left + pw}' y1='{yy:.1f}' "
                           f"y2='{yy:.1f}' stroke='{col}' stroke-width='1.5' "
                           f"stroke-dasharray='6,4'/>")
            elif pts:
                coords = " ".join(f"{X(x):.1f},{Y(min(max(y, ylo), yhi)):.1f}"
                                  for x, y in pts)
                out.append(f"<polyline fill='none' stroke='{col}' stroke-width='1.6' "
                           f"stroke-linejoin='round' points='{coords}'/>")
            dash = " stroke-dasharray='6,4'" if isinstance(pts, (int, float)) else ""
            out.append(f"<line x1='{left + pw + 12}' x2='{left + pw + 34}' y1='{ly - 4}' "
                       f"y2='{ly - 4}' stroke='{col}' stroke-width='2'{dash}/>")
            out.append(f"<text x='{left + pw + 40}' y='{ly}' font-size='11' {FONT}>"
                       f"{escape(_clip(name, 24))}</text>")
            ly += 16
    out.append(f"<text x='{left + pw / 2:.0f}' y='{height - 8}' font-size='12' "
               f"text-anchor='middle' {FONT}>{escape(xlabel)}</text>")
    out.append("</svg>")
    _write(path, out)
    return path


def bar_panels(path, title, labels, panels, colors=None, subtitle=None, width=900,
               panel_h=200):
    """Write an SVG of bar panels stacked vertically, one bar per label.

    panels: [{"ylabel": str, "values": [(value, lo, hi), ...]}], one value
    per label; lo/hi (may be None) draw a min–max whisker, e.g. over rounds.
    colors: one colour index per label (e.g. the factor a variant varies).
    """
    left, right, top, gap, bottom = 80, 20, 56 if subtitle else 40, 30, 50
    height = top + len(panels) * panel_h + (len(panels) - 1) * gap + bottom
    pw = width - left - right
    n = max(1, len(labels))
    slot = pw / n
    bw = min(64.0, slot * 0.7)
    colors = colors or [0] * n
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}'>",
           "<rect width='100%' height='100%' fill='white'/>",
           f"<text x='{left}' y='24' font-size='16' font-weight='bold' {FONT}>"
           f"{escape(title)}</text>"]
    if subtitle:
        out.append(f"<text x='{left}' y='42' font-size='11' fill='#555' {FONT}>"
                   f"{escape(subtitle)}</text>")
    for pi, pan in enumerate(panels):
        y0 = top + pi * (panel_h + gap)
        vals = [(hi if hi is not None else v) for v, lo, hi in pan["values"] if v is not None]
        yticks = nice_ticks(0.0, max(vals) if vals else 1.0, 4)
        yhi = yticks[-1]

        def Y(y, y0=y0, yhi=yhi):
            return y0 + panel_h - panel_h * (y / yhi if yhi else 0)
        for t in yticks:
            yy = Y(t)
            out.append(f"<line x1='{left}' x2='{left + pw}' y1='{yy:.1f}' y2='{yy:.1f}' "
                       f"stroke='#e4e4e4'/>")
            out.append(f"<text x='{left - 6}' y='{yy + 4:.1f}' font-size='11' "
                       f"text-anchor='end' {FONT}>{fmt_num(t)}</text>")
        out.append(f"<rect x='{left}' y='{y0}' width='{pw}' height='{panel_h}' fill='none' "
                   f"stroke='#888'/>")
        out.append(f"<text transform='translate(18,{y0 + panel_h / 2:.0f}) rotate(-90)' "
                   f"font-size='12' text-anchor='middle' {FONT}>{escape(pan['ylabel'])}</text>")
        for i, (v, lo, hi) in enumerate(pan["values"]):
            if v is None:
                continue
            x = left + i * slot + (slot - bw) / 2
            col = PALETTE[colors[i] % len(PALETTE)]
            out.append(f"<rect x='{x:.1f}' y='{Y(v):.1f}' width='{bw:.1f}' "
                       f"height='{y0 + panel_h - Y(v):.1f}' fill='{col}' opacity='0.85'/>")
            if lo is not None and hi is not None and hi > lo:
                cx = x + bw / 2
                out.append(f"<line x1='{cx:.1f}' x2='{cx:.1f}' y1='{Y(lo):.1f}' "
                           f"y2='{Y(hi):.1f}' stroke='black'/>")
                for yy in (Y(lo), Y(hi)):
                    out.append(f"<line x1='{cx - 5:.1f}' x2='{cx + 5:.1f}' y1='{yy:.1f}' "
                               f"y2='{yy:.1f}' stroke='black'/>")
            out.append(f"<text x='{x + bw / 2:.1f}' y='{Y(hi if hi else v) - 4:.1f}' "
                       f"font-size='10' text-anchor='middle' {FONT}>{fmt_label(v)}</text>")
    yb = top + len(panels) * panel_h + (len(panels) - 1) * gap
    for i, lab in enumerate(labels):
        out.append(f"<text x='{left + i * slot + slot / 2:.1f}' y='{yb + 16}' font-size='11' "
                   f"text-anchor='middle' {FONT}>{escape(_clip(lab, 18))}</text>")
    out.append("</svg>")
    _write(path, out)
    return path


def _clip(s, n):
    return s if len(s) <= n else s[:n - 1] + "…"


def _write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
