"""Open report.html in a real headless Chromium: no console errors, every image
rendered (naturalWidth > 0). Needs Debian's chromium (`apt-get install -y chromium`)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0"]

#: Appended to a copy of the report: writes what the page saw into the DOM (the report
#: itself has no script).
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = {count: imgs.length, broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
             .map(function (i) { return i.alt; }), widths: imgs.map(function (i) { return i.naturalWidth; })};
  var pre = document.createElement('pre'); pre.id = 'dnas-probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    page = tmp_path / "report.html"
    html = (finished_run / "report.html").read_text(encoding="utf-8")
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    start = dom.index('<pre id="dnas-probe">') + len('<pre id="dnas-probe">')
    probe = json.loads(dom[start:dom.index("</pre>", start)].replace("&quot;", '"'))
    assert probe["count"] >= 4 and not probe["broken"], probe
    assert min(probe["widths"]) > 100
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
