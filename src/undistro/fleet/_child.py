"""Fetch and verify one revision in a short-lived process.

python-tuf and cryptography cost the resident agent ~12 MB to import; the
agent runs ``python -m undistro.fleet._child`` instead (forked by its zygote,
see ``undistro.agent._zygote``), which verifies, fetches and unpacks, prints
one JSON line and exits, taking that memory with it. The line is one of::

    {"revision": N, "sha256": "...", "policy_dir": "..."}
    {"none": true}                  nothing newer for this node
    {"refused": "one line"}         verification failed: nothing used
    {"error": "one line"}           no source answered, or a local fault
"""

from __future__ import annotations

import argparse
import json
import sys
import types


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="undistro.fleet._child")
    parser.add_argument("state_dir")
    parser.add_argument("--source", action="append", default=[])
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--announcement", help="the announced timestamp, hex")
    args = parser.parse_args(argv)

    _without_urllib3()
    from undistro.errors import UndistroError
    from undistro.fleet._receive import RevisionRefused, pull

    announcement = bytes.fromhex(args.announcement) if args.announcement else None
    try:
        revision = pull(args.state_dir, args.source, tags=args.tag, announcement=announcement)
    except RevisionRefused as exc:
        result: dict[str, object] = {"refused": str(exc)}
    except (UndistroError, OSError) as exc:
        result = {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    else:
        if revision is None:
            result = {"none": True}
        else:
            result = {
                "revision": revision.number,
                "sha256": revision.sha256,
                "policy_dir": revision.policy_dir,
                "liars": list(revision.liars),
            }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _without_urllib3() -> None:
    """Keep urllib3 out: ``tuf.ngclient`` imports its default fetcher and
    with it urllib3, about half of ngclient's import time (~0.045 of ~0.085
    CPU-s in a worker). We always hand ngclient our own fetcher
    (``_receive._sources_fetcher``), so the default one is a placeholder
    that refuses to be built."""
    if "tuf.ngclient" in sys.modules:
        return

    class Urllib3Fetcher:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("undistro's fetch child has no default TUF fetcher")

    stub = types.ModuleType("tuf.ngclient.urllib3_fetcher")
    stub.Urllib3Fetcher = Urllib3Fetcher  # type: ignore[attr-defined]
    sys.modules.setdefault(stub.__name__, stub)


if __name__ == "__main__":
    sys.exit(main())
