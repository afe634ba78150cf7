"""QML and SLD documents of a layer style: the renderer of a column's classes, as QGIS saves it.

Pure: classes in, XML text out. Which classes each layer gets is :mod:`cracksurvey.io.styles`'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

__all__ = ["STYLE_NAME", "LayerStyle", "StyleClass", "render_style"]

#: Name of the default style stored for every layer.
STYLE_NAME = "cracksurvey"


@dataclass(frozen=True)
class StyleClass:
    """One legend entry: a range ``(lower, upper]`` of a numeric column or one category value.

    Parameters
    ----------
    label : str
        Legend text, with units.
    colour : tuple of int
        RGB (0-255).
    lower, upper : float, optional
        Range bounds (the first class of a renderer also includes ``lower``).
    value : str, optional
        Category value (categorized renderers); None matches every other value, NULL included.
    size_mm : float
        Line width on screen (millimetres); polygon outline width for fills.
    """

    label: str
    colour: tuple[int, int, int]
    lower: float = math.nan
    upper: float = math.nan
    value: str | None = None
    size_mm: float = 0.4


@dataclass(frozen=True)
class LayerStyle:
    """A layer's default style, as stored in ``layer_styles``.

    Parameters
    ----------
    qml : str
        QGIS style document (symbology).
    sld : str
        The same classes as an SLD 1.1 document.
    description : str
        What the style shows (``layer_styles.description``).
    """

    qml: str
    sld: str
    description: str


# --------------------------------------------------------------------------------------------
# QML
# --------------------------------------------------------------------------------------------
def _rgba(colour: tuple[int, int, int], alpha: int = 255) -> str:
    return f"{colour[0]},{colour[1]},{colour[2]},{alpha}"


def _options(props: Mapping[str, str]) -> str:
    items = "".join(
        f'<Option type="QString" name={quoteattr(k)} value={quoteattr(v)}/>'
        for k, v in props.items()
    )
    return f'<Option type="Map">{items}</Option>'


def _symbol_xml(
    name: str, geometry: Literal["line", "fill"], cls: StyleClass, *, fill_alpha: int
) -> str:
    if geometry == "line":
        layer_class = "SimpleLine"
        props = {
            "line_color": _rgba(cls.colour),
            "line_width": f"{cls.size_mm:g}",
            "line_width_unit": "MM",
            "line_style": "solid",
            "capstyle": "round",
            "joinstyle": "round",
        }
    else:
        layer_class = "SimpleFill"
        props = {
            "color": _rgba(cls.colour, fill_alpha),
            "style": "solid" if fill_alpha else "no",
            "outline_color": _rgba(cls.colour if not fill_alpha else (60, 60, 60)),
            "outline_width": f"{cls.size_mm:g}",
            "outline_width_unit": "MM",
            "outline_style": "solid",
            "joinstyle": "miter",
        }
    return (
        f'<symbol type="{geometry}" name={quoteattr(name)} alpha="1" clip_to_extent="1" '
        f'force_rhr="0"><layer class="{layer_class}" enabled="1" locked="0" pass="0">'
        f"{_options(props)}</layer></symbol>"
    )


def _symbols_xml(
    classes: Sequence[StyleClass], geometry: Literal["line", "fill"], fill_alpha: int
) -> str:
    return (
        "<symbols>"
        + "".join(
            _symbol_xml(str(i), geometry, c, fill_alpha=fill_alpha) for i, c in enumerate(classes)
        )
        + "</symbols>"
    )


def _field(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _renderer_xml(
    kind: Literal["graduated", "categorized", "rules", "single"],
    column: str,
    classes: Sequence[StyleClass],
    geometry: Literal["line", "fill"],
    fill_alpha: int,
) -> str:
    symbols = _symbols_xml(classes, geometry, fill_alpha)
    common = 'enableorderby="0" forceraster="0" symbollevels="0" referencescale="-1"'
    if kind == "single":
        return f'<renderer-v2 type="singleSymbol" {common}>{symbols}</renderer-v2>'
    if kind == "graduated":
        ranges = "".join(
            f'<range lower="{c.lower!r}" upper="{c.upper!r}" symbol="{i}" '
            f'label={quoteattr(c.label)} render="true"/>'
            for i, c in enumerate(classes)
        )
        return (
            f'<renderer-v2 type="graduatedSymbol" attr={quoteattr(column)} '
            f'graduatedMethod="GraduatedColor" {common}><ranges>{ranges}</ranges>{symbols}'
            '<classificationMethod id="Custom"><labelFormat format="%1 - %2" '
            'labelprecision="4" trimtrailingzeroes="1"/></classificationMethod>'
            "</renderer-v2>"
        )
    if kind == "categorized":
        categories = "".join(
            f'<category value={quoteattr(c.value or "")} symbol="{i}" '
            f'label={quoteattr(c.label)} render="true"/>'
            for i, c in enumerate(classes)
        )
        return (
            f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(column)} {common}>'
            f"<categories>{categories}</categories>{symbols}</renderer-v2>"
        )
    rules = "".join(
        f'<rule key="r{i}" symbol="{i}" label={quoteattr(c.label)} '
        f"filter={quoteattr(_rule_filter(column, c, first=i == 0))}/>"
        for i, c in enumerate(classes)
    )
    return (
        f'<renderer-v2 type="RuleRenderer" {common}><rules key="root">{rules}</rules>'
        f"{symbols}</renderer-v2>"
    )


def _rule_filter(column: str, cls: StyleClass, *, first: bool) -> str:
    """QGIS expression of a class: ``ELSE`` for a class without bounds."""
    if math.isnan(cls.lower):
        return "ELSE"
    field = _field(column)
    if cls.lower == cls.upper:
        return f"{field} = {cls.lower!r}"
    low = ">=" if first else ">"
    return f"{field} {low} {cls.lower!r} AND {field} <= {cls.upper!r}"


def _qml(renderer: str, geometry: Literal["line", "fill"]) -> str:
    geometry_code = {"line": 1, "fill": 2}[geometry]
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">'
        f"{renderer}<blendMode>0</blendMode><featureBlendMode>0</featureBlendMode>"
        f"<layerGeometryType>{geometry_code}</layerGeometryType></qgis>\n"
    )


# --------------------------------------------------------------------------------------------
# SLD
# --------------------------------------------------------------------------------------------
def _sld_filter(column: str, cls: StyleClass, *, first: bool) -> str:
    prop = f"<ogc:PropertyName>{escape(column)}</ogc:PropertyName>"
    if cls.value is not None:
        return (
            f"<ogc:Filter><ogc:PropertyIsEqualTo>{prop}<ogc:Literal>{escape(cls.value)}"
            "</ogc:Literal></ogc:PropertyIsEqualTo></ogc:Filter>"
        )
    if math.isnan(cls.lower):
        return "<se:ElseFilter/>"
    if cls.lower == cls.upper:
        return (
            f"<ogc:Filter><ogc:PropertyIsEqualTo>{prop}<ogc:Literal>{cls.lower!r}"
            "</ogc:Literal></ogc:PropertyIsEqualTo></ogc:Filter>"
        )
    low = "PropertyIsGreaterThanOrEqualTo" if first else "PropertyIsGreaterThan"
    return (
        f"<ogc:Filter><ogc:And><ogc:{low}>{prop}<ogc:Literal>{cls.lower!r}</ogc:Literal>"
        f"</ogc:{low}><ogc:PropertyIsLessThanOrEqualTo>{prop}<ogc:Literal>{cls.upper!r}"
        "</ogc:Literal></ogc:PropertyIsLessThanOrEqualTo></ogc:And></ogc:Filter>"
    )


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _sld_symbolizer(cls: StyleClass, geometry: Literal["line", "fill"], fill_alpha: int) -> str:
    # SLD widths are in pixels: 1 mm on screen is about 3.78 px at 96 dpi
    width = f"{cls.size_mm * 3.78:.2f}"
    if geometry == "line":
        return (
            f'<se:LineSymbolizer><se:Stroke><se:SvgParameter name="stroke">{_hex(cls.colour)}'
            f'</se:SvgParameter><se:SvgParameter name="stroke-width">{width}'
            "</se:SvgParameter></se:Stroke></se:LineSymbolizer>"
        )
    fill = (
        (
            f'<se:Fill><se:SvgParameter name="fill">{_hex(cls.colour)}</se:SvgParameter>'
            f'<se:SvgParameter name="fill-opacity">{fill_alpha / 255:.2f}</se:SvgParameter>'
            "</se:Fill>"
        )
        if fill_alpha
        else ""
    )
    stroke = _hex(cls.colour) if not fill_alpha else "#3c3c3c"
    return (
        f'<se:PolygonSymbolizer>{fill}<se:Stroke><se:SvgParameter name="stroke">{stroke}'
        f'</se:SvgParameter><se:SvgParameter name="stroke-width">{width}</se:SvgParameter>'
        "</se:Stroke></se:PolygonSymbolizer>"
    )


def _sld(
    layer: str,
    column: str,
    classes: Sequence[StyleClass],
    geometry: Literal["line", "fill"],
    fill_alpha: int,
    *,
    single: bool,
) -> str:
    rules = "".join(
        f"<se:Rule><se:Name>{escape(c.label)}</se:Name><se:Description><se:Title>"
        f"{escape(c.label)}</se:Title></se:Description>"
        f"{'' if single else _sld_filter(column, c, first=i == 0)}"
        f"{_sld_symbolizer(c, geometry, fill_alpha)}</se:Rule>"
        for i, c in enumerate(classes)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<StyledLayerDescriptor xmlns="http://www.opengis.net/sld" '
        'xmlns:ogc="http://www.opengis.net/ogc" xmlns:se="http://www.opengis.net/se" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.1.0" '
        'xsi:schemaLocation="http://www.opengis.net/sld '
        'http://schemas.opengis.net/sld/1.1.0/StyledLayerDescriptor.xsd">'
        f"<NamedLayer><se:Name>{escape(layer)}</se:Name><UserStyle><se:Name>{STYLE_NAME}"
        f"</se:Name><se:FeatureTypeStyle>{rules}</se:FeatureTypeStyle></UserStyle></NamedLayer>"
        "</StyledLayerDescriptor>\n"
    )


def render_style(
    layer: str,
    kind: Literal["graduated", "categorized", "rules", "single"],
    column: str,
    classes: Sequence[StyleClass],
    geometry: Literal["line", "fill"],
    description: str,
    *,
    fill_alpha: int = 0,
) -> LayerStyle:
    """The QML and SLD documents of one renderer (``kind``) of ``column``'s classes."""
    return LayerStyle(
        qml=_qml(_renderer_xml(kind, column, classes, geometry, fill_alpha), geometry),
        sld=_sld(layer, column, classes, geometry, fill_alpha, single=kind == "single"),
        description=description,
    )
