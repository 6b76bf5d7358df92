"""Synthetic person re-ID benchmark in the exact Market-1501 layout (the suite's embedded default dataset).

    python -m mprd.data.synthetic --root data --preset small --seed 0 [--override NAME=VALUE] [--contact-sheet PNG]
    python -m mprd.data.synthetic --root data --preset video-small --seed 0   (tracklets, MARS layout)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from mprd.data.synthetic.build import ensure_synthetic, read_info
from mprd.data.synthetic.config import PRESETS, VIDEO_PRESETS
from mprd.data.synthetic.contact import contact_sheet


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--override {text!r}: expected NAME=VALUE (VALUE as JSON, e.g. 0.3)")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mprd.data.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="data", help="folder that receives synthetic-<preset>-seed<seed>/")
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS) + sorted(VIDEO_PRESETS),
                    help="image presets (Market layout) or video-tiny / video-small (MARS layout)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--override", type=_parse_override, action="append", default=[], metavar="NAME=VALUE",
                    help="SyntheticConfig field to change (repeatable)")
    ap.add_argument("--workers", type=int, default=None, help="render processes (default: 2 for big presets)")
    ap.add_argument("--contact-sheet", default=None, metavar="PNG", help="also write a contact sheet here")
    ap.add_argument("--real-crops", default=None, metavar="DIR", help="real crops to show on the contact sheet")
    args = ap.parse_args(argv)
    if args.contact_sheet and args.preset in VIDEO_PRESETS:
        ap.error("--contact-sheet reads the Market layout; it is not available for the video presets")
    t0 = time.perf_counter()
    path = ensure_synthetic(args.root, args.preset, args.seed, dict(args.override), workers=args.workers)
    info = read_info(path)
    print(f"{path}  ({time.perf_counter() - t0:.1f} s; generation took {info['generation_seconds']} s "
          f"with {info['workers']} worker(s) when made)")
    print(json.dumps(info["counts"], sort_keys=True))
    if args.contact_sheet:
        print(contact_sheet(path, args.contact_sheet, real_dir=args.real_crops))
    return 0


sys.exit(main())
