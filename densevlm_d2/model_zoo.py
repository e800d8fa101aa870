"""The model zoo on the command line: which published checkpoints exist, which are in the hub cache,
and pre-fetching them for a machine without network.

    python -m densevlm_d2.model_zoo                        # list, with the cached files
    python -m densevlm_d2.model_zoo download densevlm-eva02-b16 densevlm-teacher-eva02-l14-336
    python -m densevlm_d2.model_zoo download all          # all but the files downloaded by hand

Downloads go to the Hugging Face hub cache (``HF_HOME`` / ``HF_HUB_CACHE``); copy that folder to an
offline machine and run with ``HF_HUB_OFFLINE=1``. The entries are in :mod:`densevlm_d2.clip.hub`
and in docs/model_zoo.md.
"""

from __future__ import annotations

import argparse
import sys

from .clip.hub import MODEL_ZOO, is_cached, resolve_weights, zoo_suggestions

__all__ = ["main"]


def _list() -> str:
    rows = [("name", "model", "layout", "licence", "cached")]
    for e in MODEL_ZOO.values():
        cached = is_cached(e)
        rows.append((e.name, e.model, e.layout, e.licence, str(cached) if cached else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m densevlm_d2.model_zoo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="the entries and their cached files (the default)")
    get = sub.add_parser("download", help="fetch entries into the hub cache")
    get.add_argument("names", nargs="+", help=f"'all' or any of: {', '.join(MODEL_ZOO)}")
    args = parser.parse_args(argv)
    if args.command in (None, "list"):
        print(_list())
        return 0
    names = args.names
    if names == ["all"]:  # what a program can fetch; files downloaded by hand are named
        names = [n for n, e in MODEL_ZOO.items() if not e.manual]
        by_hand = [n for n, e in MODEL_ZOO.items() if e.manual]
        print(f"downloaded by hand (see docs/model_zoo.md), skipped: {', '.join(by_hand)}")
    unknown = [n for n in names if n not in MODEL_ZOO]
    if unknown:
        parser.error(
            "unknown entries: "
            + ", ".join(f"{n!r}{zoo_suggestions(n)}" for n in unknown)
            + f" (entries: {', '.join(MODEL_ZOO)})"
        )
    failed = 0
    for name in names:
        try:
            print(f"{name}: {resolve_weights(name, downloading=True)}", flush=True)
        except FileNotFoundError as e:  # no network, HF_HUB_OFFLINE, a moved file: no traceback
            print(f"error: {e}", file=sys.stderr, flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
