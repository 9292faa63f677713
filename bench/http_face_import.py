"""Import time and RSS each candidate HTTP library adds to an asyncio process.

One command: ``.venv/bin/python bench/http_face_import.py`` — prints, for each
candidate, the median over 5 fresh interpreters of the wall time of the import
and the VmRSS it adds (asyncio is imported first: the agent already has it).
"""

from __future__ import annotations

import statistics
import subprocess
import sys

CANDIDATES = {
    "h11": "import h11",
    "aiohttp.web": "import aiohttp.web",
    "http.server (stdlib)": "import http.server",
    "undistro.content._http": "import undistro.content._http",
}
PROBE = """
import asyncio, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
r0 = rss(); t0 = time.perf_counter()
exec({stmt!r})
print(time.perf_counter() - t0, rss() - r0)
"""


def main() -> None:
    for name, stmt in CANDIDATES.items():
        times, rss = [], []
        for _ in range(5):
            out = subprocess.run(
                [sys.executable, "-c", PROBE.format(stmt=stmt)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            times.append(float(out[0]) * 1000)
            rss.append(int(out[1]))
        print(
            f"{name:28} import {statistics.median(times):7.1f} ms   "
            f"RSS +{statistics.median(rss) / 1024:5.1f} MB"
        )


if __name__ == "__main__":
    main()
