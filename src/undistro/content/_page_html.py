"""The fleet page itself: one HTML document, its CSS and script inline.

No external asset of any kind (no CDN, no font, no image): the page works
on a fleet with no way out. The script builds every element with
``createElement`` and ``textContent``, never ``innerHTML``, so a hostile
service name or error string is text, whatever it holds; the server's
Content-Security-Policy allows only this script and this style (by hash).
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root{color-scheme:light dark;--ok:#2e7d32;--bad:#c62828;--mid:#ef6c00;--dim:#777}
body{font:14px/1.4 system-ui,sans-serif;margin:1rem 1.5rem}
h1{font-size:1.3rem;margin:0 0 .2rem}
#meta{color:var(--dim);margin-bottom:.8rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.35rem .5rem;border-bottom:1px solid #8884}
th{font-weight:600;font-size:.85rem;color:var(--dim)}
td.n{font-variant-numeric:tabular-nums;text-align:right}
.alive{color:var(--ok)}.failed,.bad{color:var(--bad);font-weight:600}
.left,.reaped,.unknown,.leaving,.dim{color:var(--dim)}
.svc{display:inline-block;margin:0 .6rem .1rem 0;white-space:nowrap}
.svc .running{color:var(--ok)}.svc .failed{color:var(--bad)}.svc .backoff{color:var(--mid)}
ul{margin:0;padding-left:1rem}li{overflow-wrap:anywhere}
a{color:inherit}
#conn.off{color:var(--bad)}
dialog{max-width:46rem}
code,pre{font:12px/1.4 ui-monospace,monospace;overflow-wrap:anywhere;white-space:pre-wrap}
"""

SCRIPT = """
"use strict";
const nodes = new Map();
let served = "";
const $ = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
};
const num = (v) => (typeof v === "number" ? v : "-");
// Clock times, not "n s ago": the page has no timer to keep those true.
const at = (t) => (typeof t === "number" ? new Date(t * 1000).toLocaleTimeString() : "");
function logsHelp(rec, service) {
  const d = document.getElementById("logs");
  const port = rec.http || "7948";
  d.querySelector("#logs-what").textContent = service + " on " + rec.name;
  d.querySelector("#logs-url").textContent =
    "http://" + (rec.addr || rec.name) + ":" + port + "/logs/" + service;
  d.querySelector("#logs-cmd").textContent =
    "undistro fleet logs " + service + "        # every node running it\\n" +
    "undistro fleet logs " + service + " -f     # and follow";
  d.showModal();
}
function row(rec) {
  const c = rec.card || {};
  const tr = $("tr");
  tr.dataset.node = rec.name;
  const name = $("td", "name");
  name.append($("strong", null, rec.name), $("br"), $("span", rec.status, rec.status));
  if (rec.addr) name.append($("span", "dim", " " + rec.addr));
  tr.append(name);
  tr.append($("td", "n c-revision", c.revision ?? rec.tag_revision ?? "-"));
  tr.append($("td", "n c-generation", c.generation ?? "-"));
  tr.append($("td", "n c-kept", num(c.kept)));
  tr.append($("td", "n c-repaired", num(c.repaired)));
  tr.append($("td", "n c-failed" + (c.failed ? " bad" : ""), num(c.failed)));
  const svc = $("td", "services");
  for (const [s, phase] of Object.entries(c.services || {})) {
    const span = $("span", "svc");
    span.dataset.service = s;
    const a = $("a", null, s);
    a.href = "#logs";
    a.title = "how to read the logs of " + s;
    a.addEventListener("click", (ev) => { ev.preventDefault(); logsHelp(rec, s); });
    span.append(a, " ", $("span", phase, phase));
    svc.append(span);
  }
  tr.append(svc);
  const errs = $("ul", "errors");
  for (const [rid, why] of c.failing || []) errs.append($("li", "bad", rid + ": " + why));
  if (c.last_error) errs.append($("li", "bad", "policy: " + c.last_error));
  const ecell = $("td");
  ecell.append(errs);
  tr.append(ecell);
  const reps = $("ul", "repairs");
  for (const [rid, t] of c.repairs || []) reps.append($("li", null, rid + " at " + at(t)));
  const rcell = $("td");
  rcell.append(reps);
  tr.append(rcell);
  const via = rec.via ? " (" + rec.via + ")" : "";
  tr.append($("td", "c-heard", rec.heard ? at(rec.heard) + via : ""));
  return tr;
}
function render() {
  const body = document.getElementById("nodes");
  body.replaceChildren(...[...nodes.keys()].sort().map((n) => row(nodes.get(n))));
  let failed = 0, up = 0;
  for (const r of nodes.values()) {
    failed += (r.card && r.card.failed) || 0;
    if (r.status === "alive") up += 1;
  }
  document.getElementById("summary").textContent =
    nodes.size + " nodes, " + up + " alive, " + failed + " failed promises";
}
function update(rec) {
  nodes.set(rec.name, rec);
  render();
  document.body.dataset.updated = String(Date.now());
}
const conn = document.getElementById("conn");
const es = new EventSource("/events");
es.addEventListener("snapshot", (e) => {
  const d = JSON.parse(e.data);
  served = d.node;
  document.getElementById("served").textContent = served;
  nodes.clear();
  for (const r of d.nodes) nodes.set(r.name, r);
  render();
  document.body.dataset.updated = String(Date.now());
});
es.addEventListener("node", (e) => update(JSON.parse(e.data)));
let opens = 0;
es.onopen = () => {
  conn.textContent = "live"; conn.className = "";
  document.body.dataset.opens = String(++opens);
};
es.onerror = () => { conn.textContent = "reconnecting"; conn.className = "off"; };
document.getElementById("logs-close").addEventListener("click", () =>
  document.getElementById("logs").close());
"""

BODY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>undistro fleet</title>
<style>@STYLE@</style></head>
<body>
<h1>undistro fleet</h1>
<div id="meta">served by <span id="served">@NODE@</span> · <span id="summary">loading</span> ·
<span id="conn">connecting</span></div>
<table><thead><tr><th>node</th><th>revision</th><th>generation</th><th>kept</th>
<th>repaired</th><th>failed</th><th>services (logs)</th><th>last errors</th>
<th>recent repairs</th><th>heard</th></tr></thead>
<tbody id="nodes"></tbody></table>
<noscript><p>This page updates itself with JavaScript; without it, read
<a href="/fleet.json">/fleet.json</a> or run <code>undistro fleet status</code>.</p></noscript>
<dialog id="logs"><h2>Logs of <span id="logs-what"></span></h2>
<p>Each node serves its own logs, and only to an operator: a request must be
signed by an operator key the fleet root authorises, which a browser does not
hold. The node's endpoint:</p><pre id="logs-url"></pre>
<p>From a machine with the fleet directory (its operator keys):</p>
<pre id="logs-cmd"></pre>
<button id="logs-close">close</button></dialog>
<script>@SCRIPT@</script>
</body></html>
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (
    "default-src 'none'; "
    f"script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def page(node: str) -> bytes:
    """The document for a page served by ``node`` (escaped: a name is text)."""
    import html

    head, _, tail = BODY.partition("@NODE@")
    parts = (head.replace("@STYLE@", STYLE), html.escape(node), tail.replace("@SCRIPT@", SCRIPT))
    return "".join(parts).encode()
