"""Kill the search service with SIGKILL hundreds of times and account for every upload.

On a small platform (:func:`vs_lib.testing.build_small_platform`, in a temporary folder),
:func:`vs_lib.testing.kill_drill` starts a real server process (forked from a zygote that
imported torch/FAISS/FastAPI once), lets several clients upload, and kills it at a random
moment — some kills land during start-up (snapshot load, replay, clean-up), the others while
uploads are in flight — then restarts it and checks every upload it ever sent.

What a good result looks like: ``lost`` = 0 (every upload that got a 201 is searchable and
visible to its owner after the restarts), ``half_done`` = 0 (an upload that was cut off either
exists completely or left nothing), and no orphaned files, rows or vectors. ``attempted`` >
``acknowledged`` shows that kills really did cut uploads off mid-flight.

    python benchmarks/faults.py [--kills 200] [--images 500] [--uploaders 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--kills", type=int, default=200, help="SIGKILLs in the drill")
    ap.add_argument("--images", type=int, default=500, help="corpus images of the small platform")
    ap.add_argument("--uploaders", type=int, default=3, help="clients uploading concurrently")
    ap.add_argument("--max-uptime", type=float, default=1.5, help="longest wait (s) before a kill once uploads flow")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    from vs_lib import config, testing

    with tempfile.TemporaryDirectory(prefix="vs-bench-faults-") as tmp:
        paths = testing.build_small_platform(Path(tmp) / "platform", args.images, n_users=max(6, args.uploaders + 1),
                                             seed=args.seed)  # fmt: skip
        zygote = testing.ServerZygote()
        try:
            report = testing.kill_drill(paths, kills=args.kills, seed=args.seed, uploaders=args.uploaders,
                                        max_uptime=args.max_uptime, zygote=zygote)  # fmt: skip
        finally:
            zygote.close()
    counts = dataclasses.asdict(report)
    result: dict[str, Any] = {
        "platform": f"small ({args.images} corpus images)",
        **counts,
        "good_result": {
            "nothing_acknowledged_lost": report.lost == 0,
            "nothing_half_done": report.half_done == 0,
            "nothing_orphaned": (report.orphaned_files, report.orphaned_rows, report.orphaned_vectors) == (0, 0, 0),
            "uploads_were_cut_off": report.attempted > report.acknowledged,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(json.dumps(result, indent=2))
    if args.out:
        config.write_json_atomic(args.out, result)
    return 0 if all(result["good_result"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
