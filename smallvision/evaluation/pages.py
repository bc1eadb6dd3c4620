"""The pieces every smallvision page is built from: its stylesheet and scripts, tables, embedded images, and the
number formats the report, the compare page and the multi-label report share."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any


def img_tag(path: Path, alt: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt or path.stem)}">'


class Raw(str):
    """Table cell content that is already HTML (a link), inserted unescaped."""


def cell(v: Any) -> str:
    return v if isinstance(v, Raw) else html.escape(fmt(v))


def html_table(headers: list[str], rows: list[list[Any]], table_id: str = "") -> str:
    """A table in its own scrolling box, so a wide one never widens the page."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    tid = f' id="{table_id}"' if table_id else ""
    return f'<div class="scroll"><table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def kv_table(rows: list[list[Any]]) -> str:
    """Name-value rows, no header."""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{cell(v)}</td></tr>" for k, v in rows)
    return f'<div class="scroll"><table class="kv"><tbody>{body}</tbody></table></div>'


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


CSS = """*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#fff;line-height:1.4}
main{max-width:1240px;margin:0 auto;padding:.6em 1.2em 2em}
header.top{display:flex;flex-wrap:wrap;gap:.2em 1em;align-items:baseline;padding:.5em 1.2em;background:#1d2330;
color:#fff}
header.top b{font-size:1.05em}header.top span{color:#c8cfdc;font-size:.9em;overflow-wrap:anywhere}
p,li,dd,figcaption,h2,h3{overflow-wrap:anywhere}
h2{font-size:1.25em;margin:1.4em 0 .4em;border-bottom:1px solid #e3e6ec;padding-bottom:.2em}h3{font-size:1.05em}
.verdict{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1.2em;align-items:start;margin-top:.6em}
.card{border:1px solid #e3e6ec;border-radius:10px;padding:.8em 1.1em;background:#fafbfd}
.label{font-size:.9em;color:#596273;text-transform:uppercase;letter-spacing:.04em}
.big{font-size:3.6em;font-weight:700;line-height:1.05;margin:.05em 0}
.ci{font-size:1.02em;color:#333;overflow-wrap:anywhere}td.t,th.t{text-align:left}.ci b{white-space:nowrap}
.facts{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.15em .9em;margin:.7em 0 .3em}
.facts dt{color:#596273}.facts dd{margin:0;overflow-wrap:anywhere}
.notice{border-radius:8px;padding:.45em .8em;margin:.5em 0;font-size:.95em}
.notice.warn{background:#fff3e6;border:2px solid #d9822b}.notice.bad{background:#fdeaea;border:2px solid #c23030}
.notice.ok{background:#edf7ee;border:1px solid #5a9e5f}
.auto{margin:.5em 0;padding:.45em .8em;border-left:4px solid #3b6fd4;background:#eef3fc}
figure{margin:.6em 0;min-width:0}figcaption{font-size:.92em;color:#404856;margin:.2em 0}
img{max-width:100%;height:auto;border:1px solid #eef0f4;display:block}
.cm img{max-height:640px;width:auto;margin:0 auto}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:1em;align-items:start}
.scroll{overflow-x:auto;max-width:100%;margin:.4em 0}
.pair{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.pair .scroll{flex:0 1 auto}
table{border-collapse:collapse}td,th{border:1px solid #d5d9e0;padding:.22em .55em;text-align:right;white-space:nowrap}
th{background:#f1f3f7}td:first-child,th:first-child{text-align:left}
table.kv th,table.kv td{text-align:left}tr.chosen td{background:#e8f5e9;font-weight:600}
pre{background:#f6f7f9;padding:.8em;overflow:auto;max-width:100%;font-size:.85em}
ul.notes li{margin:.15em 0;overflow-wrap:anywhere}
th.sortable{cursor:pointer;user-select:none}th.sortable::after{content:" \\2195";color:#8a93a3}
th[aria-sort=ascending]::after{content:" \\2191"}th[aria-sort=descending]::after{content:" \\2193"}
@media (max-width:820px){.verdict{grid-template-columns:minmax(0,1fr)}.big{font-size:2.8em}main{padding:.5em .7em}}
@media print{*{-webkit-print-color-adjust:exact;print-color-adjust:exact}pre{white-space:pre-wrap}
header.top{background:none;color:#000;border-bottom:1px solid #000}header.top span{color:#333}
main{max-width:none;padding:0}.verdict{grid-template-columns:1fr 1fr}section,figure{break-inside:avoid}
.scroll{overflow:visible}a{color:#000}.card{background:none}}"""


# Marks on <body> how many embedded figures decoded, so a headless browser test can tell they rendered.
IMAGE_CHECK = (
    "window.addEventListener('load',()=>{const i=[...document.images];"
    "document.body.dataset.images=i.length;document.body.dataset.rendered=i.filter(x=>x.naturalWidth>0).length;});"
)

# Click a header of a table.sortable to sort its rows by that column (numbers by the cell's data-v), again to reverse.
SORT_SCRIPT = """document.querySelectorAll('table.sortable').forEach(t=>{t.querySelectorAll('th').forEach((th,c)=>{
th.classList.add('sortable');th.addEventListener('click',()=>{const up=th.getAttribute('aria-sort')!=='ascending';
t.querySelectorAll('th').forEach(h=>h.removeAttribute('aria-sort'));
th.setAttribute('aria-sort',up?'ascending':'descending');
const key=r=>{const d=r.children[c];const v=d.dataset.v;
return v!==undefined?parseFloat(v):d.textContent.trim().toLowerCase();};
const b=t.tBodies[0];[...b.rows].sort((x,y)=>{const p=key(x),q=key(y);return (p<q?-1:p>q?1:0)*(up?1:-1);})
.forEach(r=>b.appendChild(r));});});});"""


def page(title: str, header: str, body: list[str], script: str = "") -> str:
    return "\n".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
            f'<header class="top">{header}</header><main>',
            *body,
            f"</main><script>{IMAGE_CHECK}{script}</script></body></html>",
        ]
    )
