"""The inline chart (issue 23 §4): data drawn as written, what cannot be drawn left out and
said, real time axes, bounded labels and alt text, CJK glyphs, a chart that fails leaving the
message without it (with a note), and type readable on a phone on an opaque card."""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import warnings

import pandas as pd
import pyarrow as pa
import pytest
from conftest import USER, fabric_for, parse_strict

from mailgem.gems.email import EmailGem
from mailgem.gems.email.content.chart import MAX_DESCRIPTION_CHARS, chart_figure, draw_chart
from mailgem.gems.email.content.chart_axes import BORDER, DPI, chart_style, font_families
from mailgem.gems.email.properties import ChartOptions, Formats

REPORT = {"connection": "reports", "to": "ops@example.com", "subject": "Report", "on_error": "continue"}
FORMATS = Formats()


def _send(server, frame, **props):
    report = EmailGem(REPORT | props, fabric_for(server), user=USER, name="daily").apply(None, frame)
    return report, [parse_strict(m.data) for m in server.wait_for_messages(int((report["status"] == "sent").sum()))]


def _images(message) -> list:
    return [p for p in message.walk() if p.get_content_type() == "image/png"]


def _drawn(table: pa.Table, labels: dict[str, str] | None = None, **options):
    """The drawn figure's axes (after a full draw, so ticks exist) and the chart's words."""
    with chart_style():
        fig, chart = chart_figure(table, ChartOptions(**options), FORMATS, labels or {})
        assert fig is not None
        fig.canvas.draw()
        return fig, fig.axes[0], chart


def _tick_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]


# -- 1. no mathtext -----------------------------------------------------------------------------

def test_data_is_never_parsed_as_mathtext_anywhere_on_the_chart():
    bad = "$\\nosuchcmd$"
    table = pa.table({"x": [bad, "price $5 to $10", "c"], "a": [1, 2, 3], "b": [3, 2, 1]})
    # In tick labels, the title, both axis titles and the legend: any of them parsed would raise.
    for y, labels in ((["a", "b"], {"a": bad, "b": "$\\frac{$"}), ("a", {"x": bad, "a": "$\\alpha_{$"})):
        chart = draw_chart(table, ChartOptions(x="x", y=y, title=f"{bad} price $5 to $10"), FORMATS, labels)
        assert chart.png is not None and "price $5 to $10" in chart.description
    fig, _, _ = _drawn(table, {"a": "price $5 to $10"}, x="x", y="a")
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_parse_math")) if "$" in t.get_text()]
    assert len(texts) >= 4  # two ticks, the y axis title, the title
    assert all(not t.get_parse_math() and not t._preprocess_math(t.get_text())[1] for t in texts)


# -- 2. non-finite values ---------------------------------------------------------------------

def test_non_finite_and_overflowing_values_are_skipped_and_said():
    huge = 1.7976931348623157e308  # finite, but an axis up to it overflows
    table = pa.table({"x": list("abcdefg"), "y": [1.0, math.inf, -math.inf, math.nan, huge, None, 2.0]})
    chart = draw_chart(table, ChartOptions(x="x", y="y"), FORMATS)
    assert chart.png is not None
    assert chart.notes == ["5 values not shown: 3 not finite, 1 too large to draw, 1 empty"]
    assert chart.description == ("Chart: y by x (bar): g 2.00, a 1.00; "
                                 "5 values not shown: 3 not finite, 1 too large to draw, 1 empty")
    _, _, line = _drawn(table, kind="line", x="x", y="y")
    assert line.notes == chart.notes
    only_inf = draw_chart(pa.table({"x": ["a", "b"], "y": [math.inf, -math.inf]}), ChartOptions(x="x", y="y"), FORMATS)
    assert only_inf.png is None and only_inf.description == "No chart: nothing to draw (2 values not shown: not finite)"


def test_the_caption_reaches_the_text_the_alt_and_the_report(starttls_server):
    frame = pd.DataFrame({"carrier": ["UA", "B6", "EV"], "delayed": [40.0, math.inf, -math.inf]})
    report, [msg] = _send(starttls_server, frame, chart={"x": "carrier", "y": "delayed"})
    assert report.iloc[0].notes == "chart: 2 values not shown: not finite"
    assert "Chart: delayed by carrier (bar): UA 40.00; 2 values not shown: not finite" in msg.get_body(("plain",)).get_content()
    assert 'alt="Chart: delayed by carrier (bar): UA 40.00; 2 values not shown: not finite"' in msg.get_body(("html",)).get_content()
    assert len(_images(msg)) == 1


# -- 3. time and numeric axes -----------------------------------------------------------------

def test_a_line_over_days_has_a_time_axis_with_few_ticks():
    from matplotlib.dates import AutoDateLocator

    days = pd.date_range("2024-01-01", periods=133, freq="D")
    fig, ax, _ = _drawn(pa.Table.from_pandas(pd.DataFrame({"day": days, "n": range(133)})), kind="line", x="day", y="n")
    assert isinstance(ax.xaxis.get_major_locator(), AutoDateLocator)
    ticks = _tick_texts(ax)
    assert 3 <= len(ticks) <= 8 and "Feb" in ticks  # ConciseDateFormatter: months, not 133 dates
    dates = pa.table({"d": [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(0, 365, 7)], "n": range(53)})
    assert 3 <= len(_tick_texts(_drawn(dates, kind="line", x="d", y="n")[1])) <= 8


def test_aware_timestamps_are_drawn_in_their_zone_numbers_on_a_numeric_axis():
    from matplotlib.ticker import FixedLocator

    berlin = pd.date_range("2024-03-01 05:00", periods=5, freq="h", tz="Europe/Berlin")  # 04:00-08:00 UTC
    _, ax, _ = _drawn(pa.Table.from_pandas(pd.DataFrame({"at": berlin, "n": range(5)})), kind="line", x="at", y="n")
    ticks = _tick_texts(ax)
    assert "09:00" in ticks and "04:00" not in ticks, ticks
    _, ax, _ = _drawn(pa.table({"size": [1, 2, 10, 100], "n": [4, 3, 2, 1]}), kind="line", x="size", y="n")
    assert not isinstance(ax.xaxis.get_major_locator(), FixedLocator)
    assert list(ax.lines[0].get_xdata()) == [1, 2, 10, 100]


def test_fixed_offset_zones_are_drawn_and_naive_times_are_never_moved():
    # A Spark session in "+01:00" gives columns in that fixed offset, which zoneinfo does not know.
    utc = pd.date_range("2024-03-01 04:00", periods=5, freq="h", tz="UTC")
    offset = pa.Table.from_pandas(pd.DataFrame({"at": utc, "n": range(5)})).cast(
        pa.schema([("at", pa.timestamp("ns", tz="+01:00")), ("n", pa.int64())]))
    _, ax, chart = _drawn(offset, kind="line", x="at", y="n")
    assert "05:00" in _tick_texts(ax) and "04:00" not in _tick_texts(ax) and not chart.notes
    # formats.timezone moves instants only: naive timestamps and dates are drawn as written.
    naive = pa.Table.from_pandas(pd.DataFrame({"at": pd.date_range("2024-03-01 04:00", periods=5, freq="h"),
                                               "n": range(5)}))
    with chart_style():
        fig, _ = chart_figure(naive, ChartOptions(kind="line", x="at", y="n"), Formats(timezone="America/New_York"), {})
        fig.canvas.draw()
    ticks = _tick_texts(fig.axes[0])
    assert "04:00" in ticks and "23:00" not in ticks, ticks


# -- 4. bounded labels and text, CJK ------------------------------------------------------------

def test_long_labels_are_cut_and_the_description_is_bounded():
    long = "x" * 10_000
    table = pa.table({"x": [long + str(i) for i in range(20)], "y": list(range(20))})
    _, ax, chart = _drawn(table, x="x", y="y")
    assert all(len(t) <= 30 and t.endswith("…") for t in _tick_texts(ax))
    assert len(chart.description) <= MAX_DESCRIPTION_CHARS
    assert chart.description.startswith("Chart: y by x (bar): " + "x" * 29 + "… 19")
    assert chart.description.endswith("more)")


@pytest.mark.skipif(not font_families()[1], reason="no CJK font installed (apt-get install fonts-noto-cjk)")
def test_cjk_labels_are_drawn_with_glyphs():
    table = pa.table({"city": ["東京", "大阪", "名古屋", "서울"], "人口": [14, 9, 2, 10]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chart = draw_chart(table, ChartOptions(x="city", y="人口", title="都市の人口"), FORMATS, {"city": "都市"})
    assert chart.png is not None and chart.notes == []
    assert not [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_without_a_cjk_font_the_chart_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="mailgem.gems"):
        families, found = font_families(("No Such CJK Font",), "no-such-font-file")
    assert families == ("DejaVu Sans",) and not found
    assert "Chinese, Japanese and Korean characters may not show" in caplog.text


# -- 5. no rows -----------------------------------------------------------------------------------

def test_an_empty_frame_has_no_chart_image(starttls_server):
    assert draw_chart(pa.table({"x": pa.array([], pa.string()), "y": pa.array([], pa.int64())}),
                      ChartOptions(x="x", y="y"), FORMATS).png is None
    empty = pd.DataFrame({"x": pd.Series([], dtype="object"), "y": pd.Series([], dtype="int64")})
    report, [msg] = _send(starttls_server, empty, on_empty="send", chart={"x": "x", "y": "y"},
                          html_body="<p>{{ chart }}|</p>")
    assert _images(msg) == [] and "<p>|</p>" in msg.get_body(("html",)).get_content()
    assert msg.get_content_type() != "multipart/related" and report.iloc[0].notes is None


# -- 6. axis titles, labels, rotation ---------------------------------------------------------

def test_axes_are_titled_with_the_columns_labels(starttls_server):
    table = pa.table({"carrier": ["UA", "B6", "EV"], "delayed": [40, 76, 61], "flights": [100, 200, 150]})
    labels = {"carrier": "Airline", "delayed": "Delayed flights"}
    _, ax, chart = _drawn(table, labels, x="carrier", y="delayed")
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("Airline", "Delayed flights", "Delayed flights by Airline")
    _, ax, _ = _drawn(table, labels, x="carrier", y=["delayed", "flights"])
    assert ax.get_ylabel() == "" and [t.get_text() for t in ax.get_legend().get_texts()] == ["Delayed flights", "flights"]
    frame = table.to_pandas()
    _, [msg] = _send(starttls_server, frame, chart={"x": "carrier", "y": "delayed"},
                     table={"columns": [{"name": "carrier", "label": "Airline"}, "delayed"]})
    assert 'alt="Chart: delayed by Airline (bar): B6 76' in msg.get_body(("html",)).get_content()


def test_short_labels_stay_horizontal_crowded_ones_turn():
    short = pa.table({"x": [f"Q{i}" for i in range(12)], "y": range(12)})
    _, ax, _ = _drawn(short, x="x", y="y")
    assert {t.get_rotation() for t in ax.get_xticklabels()} == {0.0}
    crowded = pa.table({"x": [f"Department {i}" for i in range(12)], "y": range(12)})
    _, ax, _ = _drawn(crowded, x="x", y="y")
    assert {t.get_rotation() for t in ax.get_xticklabels()} == {40.0}


# -- 7. a chart that fails --------------------------------------------------------------------

def test_a_chart_that_fails_leaves_the_message_without_it_and_says_so(starttls_server, caplog):
    from mailgem.gems.email.content import logged

    logged._SAID.clear()  # warned once per process: this test must see its warning
    # validate() sees column names, not types: a text y is found only when drawing.
    frame = pd.DataFrame({"carrier": ["UA", "B6"], "delayed": ["many", "few"]})
    with caplog.at_level(logging.WARNING, logger="mailgem.gems"):
        report, [msg] = _send(starttls_server, frame, chart={"x": "carrier", "y": "delayed"})
    assert list(report["status"]) == ["sent"]
    assert report.iloc[0].notes == "chart not drawn: y column 'delayed' is string, not a number"
    assert "chart not drawn: y column 'delayed' is string" in caplog.text
    assert _images(msg) == [] and "<img" not in msg.get_body(("html",)).get_content()
    assert "Chart:" not in msg.get_body(("plain",)).get_content()


# -- 8. readable on a phone, in dark mode -----------------------------------------------------

def test_type_is_readable_on_a_phone_and_the_card_is_opaque():
    from PIL import Image

    table = pa.table({"x": ["a", "b"], "y": [1, 2]})
    fig, ax, _ = _drawn(table, x="x", y="y")
    tick_pt = min(t.get_fontsize() for t in ax.get_xticklabels() + ax.get_yticklabels())
    # 1,200 image px shown at 390 CSS px on a phone: a point is DPI/72 image px, times 390/1200.
    assert tick_pt * DPI / 72 * 390 / 1200 >= 9
    png = Image.open(io.BytesIO(draw_chart(table, ChartOptions(x="x", y="y"), FORMATS).png)).convert("RGBA")
    assert png.getextrema()[3] == (255, 255)  # no transparent pixel
    border = tuple(int(BORDER[i:i + 2], 16) for i in (1, 3, 5))
    assert png.getpixel((0, png.height // 2))[:3] == border and png.getpixel((8, 8))[:3] == (255, 255, 255)
