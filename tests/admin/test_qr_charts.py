"""QR payload format and the SVG chart builders."""

from __future__ import annotations

import base64
import json
import zlib

from server.qr import qr_png_bytes, qr_svg_inline, settings_payload
from server.views.admin_charts import Bar, bar_chart, trend_chart
from tests.qrcodes import read_qr_png


def test_settings_payload__zlib_base64_json_as_collect_reads_it() -> None:
    payload = settings_payload("https://k.example/v1/key/T/projects/3", "Office <A>")
    settings = json.loads(zlib.decompress(base64.b64decode(payload)))
    assert settings == {
        "general": {
            "server_url": "https://k.example/v1/key/T/projects/3",
            "form_update_mode": "match_exactly",
        },
        "admin": {},
        "project": {"name": "Office <A>", "icon": "O", "color": "#8a5a00"},
    }


def test_qr_png__is_png_and_svg_inline_has_no_style_attribute() -> None:
    payload = settings_payload("http://x/v1/key/T/projects/1", "P")
    png = qr_png_bytes(payload)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert read_qr_png(png) == payload  # what a scanner reads is the payload itself
    svg = qr_svg_inline(payload)
    assert svg.startswith("<svg") and "style=" not in svg  # CSP forbids inline styles


def test_trend_chart__escapes_names_and_skips_unrated_points() -> None:
    svg = str(trend_chart({"<b>Safety</b>": [("2026-01-01", 2), ("2026-02-01", None)]}))
    assert "<b>" not in svg and "&lt;b&gt;Safety" in svg
    assert svg.count('class="point-label"') == 1
    assert "style=" not in svg


def test_trend_chart__empty__says_so() -> None:
    assert "No scored assessments yet" in str(trend_chart({}))


def test_bar_chart__suppressed_bar_has_no_value() -> None:
    svg = str(bar_chart("T", [Bar("a", 3.0, 9), Bar("b", None, 2, True)]))
    assert "3.00 (n=9)" in svg
    assert svg.count("suppressed to protect small groups") == 1
    assert "(n=2)" not in svg


def test_bar_chart__label_too_long_for_any_chart__shortened_whole_in_its_tooltip() -> None:
    """Should shorten a label longer than the widest label column (an office name typed on a
    device) with an ellipsis, keeping it whole in the label's tooltip, escaped."""
    import re

    long = "Oficina <regional> " + "de atención a sobrevivientes " * 6
    svg = str(bar_chart("T", [Bar(long, 1.0, 9), Bar("中文办公室 · Safety", 2.0, 9)]))
    width = int(re.search(r'viewBox="0 0 (\d+) ', svg).group(1))
    assert width <= 560 + 330 + 110
    labels = re.findall(r'text-anchor="end">(.*?)</text>', svg)
    assert labels[0].startswith("<title>Oficina &lt;regional&gt; de atención")
    assert labels[0].endswith("…") and labels[1] == "中文办公室 · Safety"


def test_trend_chart__many_assessments__date_labels_never_overlap() -> None:
    """Should keep every date readable for a survivor assessed for years (intake, 6 months,
    then yearly: 9 and 30 assessments). Side by side, 9 dates on 512 px ran into each other."""
    import datetime as dt
    import itertools
    import math
    import re

    from server.views.admin_charts import text_width

    for count in (3, 9, 30):
        dates = [dt.date(2020, 1, 1) + dt.timedelta(days=365 * i) for i in range(count)]
        svg = str(trend_chart({"Safety": [(d, 2.5) for d in dates]}))
        labels = [
            (x, "transform=" in attrs, lab)
            for x, attrs, lab in re.findall(
                r'<text class="axis-label x-label" x="([\d.]+)"([^>]*)>([^<]+)<', svg
            )
        ]
        assert [lab for _x, _t, lab in labels] == [d.isoformat() for d in dates]
        xs = [float(x) for x, _t, _lab in labels]
        step = min(b - a for a, b in itertools.pairwise(xs))
        slanted = {t for _x, t, _lab in labels}
        assert len(slanted) == 1
        if slanted == {True}:  # parallel slanted lines of text, one font height apart at least
            assert step * math.sin(math.radians(40)) >= 14
        else:
            assert step >= text_width("2020-01-01") + 8
        width, height = map(float, re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
        assert max(xs) < width
        if slanted == {True}:  # the slanted dates fit under the plot
            assert height >= 36 + 240 + 18 + text_width("2020-01-01") * math.sin(math.radians(40))
