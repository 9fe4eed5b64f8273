"""One self-contained HTML page: plotly.js embedded, figures inline, nothing fetched.

Every HTML output of speedtrace (report, diff, timeline) is built here, so that each opens
offline and from a file: plotly.js is inlined once per page, figures are inlined as JSON, and a
Content-Security-Policy forbids any request to the network (a report is often opened on a
laptop far from the machine that made it, and a trace's names must not be able to reach out).

Escaping: ``esc`` for text and attribute values. Figure JSON comes from ``plotly.io.to_json``,
which writes ``<``, ``>`` and ``/`` as ``\\u`` escapes, so a name cannot close the script tag.
Plotly draws hover and axis text as its own small HTML subset: figure builders pass names
through ``esc`` too, so a name is shown as written rather than interpreted.
"""

from __future__ import annotations

import html

# No network at all: scripts and styles only inline, images only as data: URIs. 'unsafe-eval':
# plotly's WebGL traces (the timeline's Scattergl) compile their draw calls with Function()
# (regl); without it they show "WebGL is not supported" (plotly.js issues #897, #6140).
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src data:; font-src data:")

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1400px;
padding:0 20px 40px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:18px 0 4px} h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #dde}
h3{font-size:15px;margin:18px 0 6px}
.subject{color:#556;font-family:ui-monospace,monospace;word-break:break-all}
.warning{background:#fff4d6;border-left:4px solid #e0a400;padding:6px 10px;margin:6px 0;
white-space:pre-wrap;word-break:break-word}
.note{color:#556}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e4e6ee;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f4f5f9} td.r,th.r{text-align:right} td.code{font-family:ui-monospace,monospace;
font-size:12px;max-width:640px;overflow-wrap:anywhere}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dl.facts dt{font-weight:600} dl.facts dd{margin:0}
.plot{width:100%;min-height:120px}
nav.toc{margin:8px 0 4px;font-size:13px;line-height:1.9} nav.toc a{white-space:nowrap}
nav.toc a.sub{color:#556}
.warnings{margin:10px 0 4px} .warnings .warning{font-weight:500}
table caption{caption-side:top;text-align:left;font-weight:600;padding:2px 0}
td.code{unicode-bidi:isolate}
.figs{margin:8px 0 18px}
tr.rownote td{color:#556;font-size:12px;padding-left:28px;font-family:ui-monospace,monospace;
overflow-wrap:anywhere}
section.level2{margin-left:12px}
"""


DEFAULT_HEIGHT = 450  # px, plotly's own default


def esc(text) -> str:
    """Text or an attribute value, HTML-escaped (quotes included). The double quote becomes
    the numeric ``&#34;`` rather than ``&quot;``: plotly's text renderer decodes numeric
    references but not ``&quot;``, and the same escaped name goes into hover text too."""
    return html.escape("" if text is None else str(text), quote=True).replace("&quot;", "&#34;")


def plotly_js() -> str:
    """The plotly.js bundle that ships with the plotly package (no CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_html(fig, div_id: str) -> str:
    """A div and the script that draws ``fig`` (a plotly Figure) into it."""
    import plotly.io as pio

    spec = pio.to_json(fig, validate=False)
    div_id = esc(div_id)
    config = '{"responsive": true, "displaylogo": false}'
    # A responsive plot takes its container's height: give the container the figure's own
    # height, or plotly's usual 450 px, so that no figure is drawn squashed.
    height = getattr(getattr(fig, "layout", None), "height", None) or DEFAULT_HEIGHT
    return (f'<div id="{div_id}" class="plot" style="height:{int(height)}px"></div>\n'
            f'<script>(function(){{var f={spec};'
            f'Plotly.newPlot("{div_id}",f.data,f.layout,{config});}})();</script>\n')


def page(title: str, body: str, *, with_plotly: bool = True) -> str:
    """A whole HTML document around ``body`` (already HTML), plotly.js inlined when asked."""
    script = f"<script>{plotly_js()}</script>\n" if with_plotly else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n{script}</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")
