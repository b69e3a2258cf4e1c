"""SVG line plots with no dependencies, shared by bench/perf/run_perf.py (log-log) and
bench/results/run_sweeps.py (linear): the frame, the title and axis labels, and the series with
their legend. Each caller draws its own axes (grid lines and ticks) and says which points of a series
are drawn."""

# One colour per built-in policy in every plot.
POLICY_COLORS = {"static:2": "#757575", "rssp": "#8d6e63", "round-based": "#1f77b4", "edf-best-fit": "#ff7f0e",
                 "slo-aware": "#2ca02c", "throughput-first": "#9467bd"}
OTHER_COLOR = "#17becf"


def head(box, title):
    """The opening tag, the white background and the title. box: (W, H, L, R, T, B), the size and
    the margins around the plot area."""
    W, H, L, R, T, B = box
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
            f'<rect width="{W}" height="{H}" fill="white"/>',
            f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']


def axis_labels(box, x_label, y_label, x_label_gap):
    """The x label centred below the plot area (its baseline x_label_gap above the bottom edge) and the
    y label turned along the left edge."""
    W, H, L, R, T, B = box
    return [f'<text x="{(L + W - R) / 2}" y="{H - x_label_gap}" text-anchor="middle">{x_label}</text>',
            f'<text x="16" y="{(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 {(T + H - B) / 2})">{y_label}</text>']


def series_lines(box, series, sx, sy, drawn, colors, dashed):
    """Each series as a polyline with a dot per point and a legend entry to the right of the plot
    area. drawn(points) gives the points to draw, in order (none: the series is left out, its legend
    slot stays empty); sx, sy map values to pixels; the series named `dashed` is drawn dashed."""
    W, H, L, R, T, B = box
    e = []
    for i, (name, pts) in enumerate(series.items()):
        pts = drawn(pts)
        if not pts:
            continue
        c = colors.get(name, OTHER_COLOR)
        dash = ' stroke-dasharray="6 3"' if name == dashed else ""
        e.append(f'<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="' +
                 " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            e.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"/>')
        e.append(f'<line x1="{W - R + 10}" y1="{T + 16 * i}" x2="{W - R + 30}" y2="{T + 16 * i}" stroke="{c}" stroke-width="2"{dash}/>')
        e.append(f'<text x="{W - R + 36}" y="{T + 16 * i + 4}">{name}</text>')
    return e


def write(path, elements):
    """Closes the document and writes it."""
    with open(path, "w") as f:
        f.write("\n".join(elements + ["</svg>"]) + "\n")
