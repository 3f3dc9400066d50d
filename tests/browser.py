"""Opening a page in headless Chromium (Debian's `chromium`) from a test: a probe script added to a copy of the
page reports, once the page has loaded, every image's natural width and the ids of its sections; the DOM that
Chromium dumps carries the report. No driver or network is needed."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

PROBE = """
<pre id="probe-result"></pre>
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(img => ({src: img.getAttribute("src"), width: img.naturalWidth}));
  const sections = Array.from(document.querySelectorAll("h2[id]")).map(h => h.id);
  const tables = Array.from(document.querySelectorAll("h2[id]")).map(h => {
    let node = h.nextElementSibling, count = 0;
    while (node && node.tagName !== "H2") { if (node.tagName === "TABLE") count++; node = node.nextElementSibling; }
    return [h.id, count];
  });
  document.getElementById("probe-result").textContent = JSON.stringify({images, sections, tables: Object.fromEntries(tables)});
});
</script>
"""


def chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)


def _run(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                           "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=120)


def probe_page(page: Path) -> dict:
    """{"images": [{src, width}], "sections": [ids], "tables": {section id: tables in it}} of `page` as Chromium
    loads it (a probing copy is written beside the page so relative image paths resolve the same)."""
    browser = chromium()
    html = page.read_text()
    probing = page.with_name(f".probe-{page.name}")
    probing.write_text(html.replace("</body>", PROBE + "</body>", 1))
    try:
        dumped = _run(browser, "--dump-dom", probing.resolve().as_uri())
    finally:
        probing.unlink()
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', dumped.stdout, re.S)
    if not found or not found.group(1):
        raise RuntimeError(f"Chromium did not run the probe on {page}: {dumped.stderr[-500:]}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(page: Path, out: Path, size: str = "1280,6000") -> Path:
    _run(chromium(), f"--screenshot={out}", f"--window-size={size}", page.resolve().as_uri())
    return out
