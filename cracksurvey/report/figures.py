"""Report figures as inline SVG strings (pure: numbers and geometries in, markup out).

No plotting library and no JavaScript: every figure is a small SVG written here, so the report
stays self-contained, prints sharply and opens from a USB stick.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike

from cracksurvey.summary import ORIENTATION_TOLERANCE_DEG, orientation_class

__all__ = [
    "LEVEL_COLOURS",
    "UNKNOWN_COLOUR",
    "WIDTH_CLASSES_MM",
    "image_overlay_svg",
    "level_bars_svg",
    "level_colour",
    "overview_map_svg",
    "png_data_uri",
    "semantics_tint_uri",
    "rose_svg",
    "width_histogram_svg",
]

#: Fill colour of each damage level (0, 1, ...), light to dark; unknown is grey.
LEVEL_COLOURS = ("#66bd63", "#fee08b", "#fdae61", "#f46d43", "#a50026", "#40004b")
UNKNOWN_COLOUR = "#bdbdbd"
#: Class edges (mm) of the width histograms: hairline to wide open.
WIDTH_CLASSES_MM = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, math.inf)
_ORIENTATION_COLOURS = {"horizontal": "#4575b4", "vertical": "#1b7837", "diagonal": "#d73027"}
_CRACK_COLOUR = "#ff00cc"


def level_colour(level: Any) -> str:
    """Fill colour of a damage level (None/NaN: unknown grey)."""
    if level is None or (isinstance(level, float) and math.isnan(level)) or level is np.nan:
        return UNKNOWN_COLOUR
    try:
        return LEVEL_COLOURS[min(int(level), len(LEVEL_COLOURS) - 1)]
    except (TypeError, ValueError):
        return UNKNOWN_COLOUR


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def png_data_uri(rgb: np.ndarray, *, quality: int = 80) -> str:
    """``data:`` URI of an RGB array (rows, cols, 3) uint8, as JPEG (small, photos)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


#: Tint of each façade-semantics class in the report's overlays (RGBA; wall left clear).
SEMANTICS_TINT = {
    1: (40, 90, 230, 110),  # opening
    2: (40, 170, 60, 110),  # background
    255: (20, 20, 20, 150),  # no data
}


def semantics_tint_uri(classes: np.ndarray) -> str | None:
    """``data:`` URI (PNG with alpha) tinting openings, background and no data; None if all
    wall."""
    from PIL import Image

    rgba = np.zeros((*classes.shape, 4), np.uint8)
    for value, colour in SEMANTICS_TINT.items():
        rgba[classes == value] = colour
    if not rgba[..., 3].any():
        return None
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------
def _ring_path(coords: np.ndarray, to_view: Any) -> str:
    x, y = to_view(coords[:, 0], coords[:, 1])
    return "M" + "L".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y)) + "Z"


def _polygon_path(geometry: Any, to_view: Any) -> str:
    parts = []
    for polygon in getattr(geometry, "geoms", [geometry]):
        parts.append(_ring_path(np.asarray(polygon.exterior.coords), to_view))
        parts += [_ring_path(np.asarray(r.coords), to_view) for r in polygon.interiors]
    return "".join(parts)


def _legend(levels: Mapping[int, str], y: float) -> str:
    items = [(level_colour(level), f"{level} {label}") for level, label in levels.items()]
    items.append((UNKNOWN_COLOUR, "not imaged"))
    out = []
    for i, (colour, text) in enumerate(items):
        x = 8 + i * 150
        out.append(
            f'<rect x="{x}" y="{y}" width="14" height="14" fill="{colour}" '
            f'stroke="#333"/><text x="{x + 19}" y="{y + 11}">{escape(text)}</text>'
        )
    return "".join(out)


def overview_map_svg(
    buildings: Sequence[Mapping[str, Any]],
    levels: Mapping[int, str],
    *,
    width_px: int = 900,
) -> str:
    """Overview of buildings coloured by damage level.

    Buildings with a footprint (``geometry``, in one projected CRS) are drawn to scale, north
    up; the others (façade-only surveys) as a labelled schematic row of squares below.

    Parameters
    ----------
    buildings : sequence of mapping
        ``label``, ``anchor`` (link target id), ``level`` (int or None), ``title`` (tooltip)
        and ``geometry`` (shapely polygonal or None).
    levels : mapping of int to str
        Legend: level to label.
    width_px : int
        Width of the figure.
    """
    mapped = [b for b in buildings if b.get("geometry") is not None]
    others = [b for b in buildings if b.get("geometry") is None]
    body, height = [], 0.0
    if mapped:
        x0, y0, x1, y1 = shapely.total_bounds([b["geometry"] for b in mapped])
        pad = 0.05 * max(x1 - x0, y1 - y0, 1e-9)
        x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
        scale = width_px / (x1 - x0)
        height = min((y1 - y0) * scale, 700.0)
        scale = min(scale, height / (y1 - y0))

        def to_view(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (x - x0) * scale, (y1 - y) * scale

        for b in mapped:
            point = b["geometry"].representative_point()
            px, py = to_view(np.array([point.x]), np.array([point.y]))
            body.append(
                f'<a href="#{b["anchor"]}"><path d="{_polygon_path(b["geometry"], to_view)}" '
                f'fill="{level_colour(b.get("level"))}" stroke="#222" stroke-width="1">'
                f"<title>{escape(b['title'])}</title></path>"
                f'<text x="{px[0]:.1f}" y="{py[0]:.1f}" class="maplabel">'
                f"{escape(b['label'])}</text></a>"
            )
        body.append(_scale_bar(scale, height))
    if others:
        y = height + 24
        body.append(
            f'<text x="8" y="{y}">Without a footprint (façade images only), schematic:</text>'
        )
        per_row = max(1, int(width_px // 110))
        for i, b in enumerate(others):
            bx, by = 8 + (i % per_row) * 110, y + 10 + (i // per_row) * 70
            body.append(
                f'<a href="#{b["anchor"]}"><rect x="{bx}" y="{by}" width="100" height="56" '
                f'fill="{level_colour(b.get("level"))}" stroke="#222">'
                f"<title>{escape(b['title'])}</title></rect>"
                f'<text x="{bx + 50}" y="{by + 33}" class="maplabel">{escape(b["label"])}'
                "</text></a>"
            )
        height = y + 10 + math.ceil(len(others) / per_row) * 70
    body.append(_legend(levels, height + 8))
    total = height + 30
    return (
        f'<svg class="map" viewBox="0 0 {width_px} {total:.0f}" role="img" '
        f'aria-label="overview map of buildings by damage level">{"".join(body)}</svg>'
    )


def _scale_bar(scale: float, height: float) -> str:
    """A scale bar (CRS units, metres for projected CRSs) in the lower-left corner."""
    target = 120 / scale
    nice = 10 ** math.floor(math.log10(target))
    for step in (5, 2, 1):
        if step * nice <= target:
            nice *= step
            break
    length = nice * scale
    return (
        f'<g class="scalebar"><rect x="8" y="{height - 14:.1f}" width="{length:.1f}" '
        f'height="4" fill="#222"/><text x="8" y="{height - 18:.1f}">{_num(nice)} m</text></g>'
    )


def level_bars_svg(counts: Mapping[int | None, int], *, width_px: int = 320) -> str:
    """A stacked bar of building counts per damage level (None: not imaged)."""
    total = sum(counts.values()) or 1
    x, out = 0.0, []
    for level, n in sorted(counts.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        if not n:
            continue
        w = width_px * n / total
        name = "not imaged" if level is None else f"level {level}"
        out.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="18" '
            f'fill="{level_colour(level)}" stroke="#fff"><title>{name}: {n}</title></rect>'
        )
        x += w
    return (
        f'<svg class="bars" viewBox="0 0 {width_px} 18" width="{width_px}" height="18" '
        f'role="img" aria-label="buildings per damage level">{"".join(out)}</svg>'
    )


# --------------------------------------------------------------------------------------------
# Per-building figures
# --------------------------------------------------------------------------------------------
def image_overlay_svg(
    data_uri: str | None,
    size: tuple[int, int],
    polylines: Sequence[np.ndarray],
    *,
    outline: np.ndarray | None = None,
    label: str = "",
    tint_uri: str | None = None,
) -> str:
    """An image thumbnail with crack polylines drawn over it.

    Parameters
    ----------
    data_uri : str or None
        The thumbnail (``data:`` URI); None draws the cracks on a grey background.
    size : (rows, cols)
        Thumbnail size, pixels.
    polylines : sequence of ndarray of shape (n, 2)
        Crack polylines as (x, y) = (col, row) in thumbnail pixels.
    outline : ndarray of shape (n, 2), optional
        The building footprint in thumbnail pixels (for a map image cropped to a building).
    label : str
        Accessible description.
    tint_uri : str, optional
        A transparent image laid over the thumbnail (the façade semantics).
    """
    rows, cols = size
    background = (
        f'<image href="{data_uri}" x="0" y="0" width="{cols}" height="{rows}"/>'
        if data_uri
        else f'<rect width="{cols}" height="{rows}" fill="#ddd"/>'
    )
    if tint_uri:
        background += (
            f'<image class="semantics" href="{tint_uri}" x="0" y="0" width="{cols}" '
            f'height="{rows}" preserveAspectRatio="none" style="image-rendering:pixelated"/>'
        )
    lines = "".join(
        '<polyline points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in line) + '"/>'
        for line in polylines
        if len(line) >= 2
    )
    frame = ""
    if outline is not None and len(outline) >= 3:
        frame = (
            '<polygon class="footprint" points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in outline)
            + '"/>'
        )
    return (
        f'<svg class="overlay" viewBox="0 0 {cols} {rows}" role="img" '
        f'aria-label="{escape(label)}">{background}{frame}'
        f'<g fill="none" stroke="{_CRACK_COLOUR}" stroke-width="2" '
        f'stroke-linejoin="round" vector-effect="non-scaling-stroke">{lines}</g></svg>'
    )


def width_histogram_svg(width_mm: ArrayLike, length_m: ArrayLike, *, width_px: int = 360) -> str:
    """Crack length per width class (branch mean widths, :data:`WIDTH_CLASSES_MM`).

    Parameters
    ----------
    width_mm, length_m : array_like of shape (n,)
        Mean width and length of each branch; NaN values are ignored.
    """
    w = np.asarray(width_mm, dtype=np.float64).ravel()
    v = np.asarray(length_m, dtype=np.float64).ravel()
    ok = np.isfinite(w) & np.isfinite(v)
    if not ok.any():
        return '<p class="note">No metric crack width (no crack, or images in pixel units).</p>'
    edges = np.asarray(WIDTH_CLASSES_MM)
    index = np.clip(np.searchsorted(edges, w[ok], side="right") - 1, 0, len(edges) - 2)
    totals = np.bincount(index, weights=v[ok], minlength=len(edges) - 1)
    top, plot_h, bar_w = totals.max() or 1.0, 120.0, (width_px - 50) / len(totals)
    bars = []
    for i, total in enumerate(totals):
        h = plot_h * total / top
        x = 45 + i * bar_w
        label = f"≥{_num(edges[i])}" if math.isinf(edges[i + 1]) else _num(edges[i + 1])
        bars.append(
            f'<rect x="{x + 1:.1f}" y="{10 + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
            f'height="{h:.1f}" fill="#8c510a"><title>{_num(edges[i])}-{label} mm: '
            f"{total:.2f} m</title></rect>"
            f'<text x="{x + bar_w / 2:.1f}" y="{plot_h + 24:.1f}" class="tick">{label}</text>'
        )
    return (
        f'<svg class="hist" viewBox="0 0 {width_px} {plot_h + 48:.0f}" role="img" '
        f'aria-label="crack length per width class">'
        f'<text x="2" y="14" class="tick">{top:.2f} m</text>'
        f'<line x1="44" y1="10" x2="44" y2="{plot_h + 10:.0f}" stroke="#333"/>'
        f'{"".join(bars)}<text x="{width_px / 2:.0f}" y="{plot_h + 44:.0f}" class="axis">'
        "crack width, mm (upper class limit) — bar: crack length, m</text></svg>"
    )


def rose_svg(
    orientation_deg: ArrayLike, length_m: ArrayLike, *, size_px: int = 220, bin_deg: float = 15.0
) -> str:
    """Orientation rose: crack length per direction bin, mirrored (directions are axial).

    Petal radius is proportional to the square root of the length in the bin (area-true);
    petals are coloured by orientation class (horizontal, vertical, diagonal).
    """
    angle = np.mod(np.asarray(orientation_deg, dtype=np.float64).ravel(), 180.0)
    length = np.asarray(length_m, dtype=np.float64).ravel()
    ok = np.isfinite(angle) & np.isfinite(length)
    if not ok.any():
        return '<p class="note">No metric crack length to draw an orientation rose.</p>'
    n_bins = int(round(180.0 / bin_deg))
    index = np.minimum((angle[ok] // bin_deg).astype(int), n_bins - 1)
    totals = np.bincount(index, weights=length[ok], minlength=n_bins)
    centre, radius = size_px / 2, size_px / 2 - 18
    petals = []
    for i, total in enumerate(totals):
        if total <= 0:
            continue
        r = radius * math.sqrt(total / totals.max())
        colour = _ORIENTATION_COLOURS[str(orientation_class([(i + 0.5) * bin_deg])[0])]
        for offset in (0.0, 180.0):  # axial: each direction drawn both ways
            a0, a1 = (math.radians(i * bin_deg + offset), math.radians((i + 1) * bin_deg + offset))
            p0 = (centre + r * math.cos(a0), centre - r * math.sin(a0))
            p1 = (centre + r * math.cos(a1), centre - r * math.sin(a1))
            petals.append(
                f'<path d="M{centre},{centre}L{p0[0]:.1f},{p0[1]:.1f}A{r:.1f},{r:.1f} 0 0 0 '
                f'{p1[0]:.1f},{p1[1]:.1f}Z" fill="{colour}" stroke="#fff" stroke-width="0.5">'
                f"<title>{i * bin_deg:.0f}-{(i + 1) * bin_deg:.0f}°: {total:.2f} m</title></path>"
            )
    tol = ORIENTATION_TOLERANCE_DEG
    guides = "".join(
        f'<line x1="{centre}" y1="{centre}" x2="{centre + radius * math.cos(math.radians(a)):.1f}" '
        f'y2="{centre - radius * math.sin(math.radians(a)):.1f}" stroke="#999" '
        f'stroke-dasharray="2,2"/>'
        for a in (tol, 90 - tol, 90 + tol, 180 - tol, 180 + tol, 270 - tol, 270 + tol, 360 - tol)
    )
    return (
        f'<svg class="rose" viewBox="0 0 {size_px} {size_px}" role="img" '
        f'aria-label="orientation rose of crack length">'
        f'<circle cx="{centre}" cy="{centre}" r="{radius:.1f}" fill="none" stroke="#ccc"/>'
        f"{guides}{''.join(petals)}"
        f'<text x="{size_px - 2}" y="{centre - 4}" class="tick end">x</text>'
        f'<text x="{centre + 4}" y="12" class="tick">y</text></svg>'
    )
