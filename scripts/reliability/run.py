#!/usr/bin/env python3
"""`make reliability`: the proof suite of issue 8, against the release binary of the local server.

Parts (each selectable with --only): crash (crash and stall catalogue), killnine (kill -9 during
load), isolation (a misbehaving hook beside a healthy one on the same event: slow, hanging,
trickling, failing, gone, throttled, paused), fuzz (schemathesis + malformed bodies), ssrf (SSRF
catalogue in a network namespace), memory (RSS over create/test/delete cycles), throughput (the
end-to-end bench). Prints one table of figures at the end and exits 1 when a target is missed (2
when the harness itself failed).

  python3 scripts/reliability/run.py --quick                 # every part, small sizes, < 5 min
  python3 scripts/reliability/run.py --only crash,memory     # some parts, full size
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import PartResult  # noqa: E402

PARTS = ["crash", "killnine", "isolation", "fuzz", "ssrf", "memory", "throughput"]
# Parts that run inside a network namespace of their own (run.py re-executes itself there).
IN_NETNS = {"fuzz": ["-n"], "ssrf": ["-n", "-m"]}
JSON_MARK = "RELIABILITY-PART-JSON: "
ISOLATION_ROWS = ["slow", "hanging", "trickle", "failing", "gone", "throttled-10", "throttled-1",
                  "paused"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    p.add_argument("--quick", action="store_true",
                   help="small sizes: core attacks delivered, 1 kill run of 1,000 events, "
                        "isolation rows of 40-200 events (about 90 s, rows in parallel), "
                        "600 fuzz requests, 200 memory cycles, no bench")
    p.add_argument("--binary", default=common.DEFAULT_BINARY, help="the event-hooks-local binary")
    p.add_argument("--crash-filter", default="",
                   help="crash: run only attacks whose name contains one of these "
                        "(comma-separated, case-insensitive), e.g. 'close,pcall'")
    p.add_argument("--killnine-runs", type=int, default=0, help="killnine: runs (3; quick 1)")
    p.add_argument("--killnine-events", type=int, default=0,
                   help="killnine: events per run (3000; quick 1000)")
    p.add_argument("--isolation-rows", default="",
                   help="isolation: run only these rows, comma-separated (default all: "
                        f"{','.join(ISOLATION_ROWS)})")
    p.add_argument("--fuzz-requests", type=int, default=0,
                   help="fuzz: schemathesis requests at least (5000; quick 600)")
    p.add_argument("--memory-cycles", type=int, default=0,
                   help="memory: cycles after the warm-up of 50 (1000; quick 200)")
    p.add_argument("--bench-events", type=int, default=0,
                   help="throughput: BENCH_EVENTS (10000; quick: skipped unless given)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    p.add_argument("--inner", help=argparse.SUPPRESS)  # run one part here, print its JSON
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in args.parts if x not in PARTS]
    if unknown:
        p.error(f"unknown part(s): {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    rows = [x.strip() for x in args.isolation_rows.split(",") if x.strip()]
    if [x for x in rows if x not in ISOLATION_ROWS]:
        p.error(f"unknown isolation row(s) in {args.isolation_rows!r}; "
                f"choose from {', '.join(ISOLATION_ROWS)}")
    return args


def module(name):
    return __import__(name)


def run_part_here(name, args, workdir):
    try:
        return module(name).run(args, workdir, args.binary)
    except Exception:  # the harness failed, not the server: report it as such
        part = PartResult(name)
        part.add("harness error", traceback.format_exc().strip().splitlines()[-1][:90], "-", False)
        part.notes.append(traceback.format_exc())
        return part


def run_part_in_netns(name, args, workdir, argv):
    unshare = shutil.which("unshare")
    part = PartResult(name)
    if os.geteuid() != 0 or not unshare:
        why = "not root" if os.geteuid() != 0 else "unshare not found (apt-get install util-linux)"
        part.add("skipped", f"skipped: {why}", "-", None)
        return part
    cmd = [unshare, *IN_NETNS[name], "--", sys.executable, os.path.abspath(__file__),
           *argv, "--inner", name, "--workdir", workdir]
    started = time.monotonic()
    env = dict(os.environ, RELIABILITY_IN_NETNS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True)
    result = None
    try:
        for line in proc.stdout:
            if line.startswith(JSON_MARK):
                result = PartResult.from_json(json.loads(line[len(JSON_MARK):]))
            else:
                print(line, end="", flush=True)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if result is None:
        part.add("harness error", f"no result from the namespace (exit {proc.returncode})", "-",
                 False)
        return part
    result.seconds = result.seconds or time.monotonic() - started
    return result


def table(parts):
    rows = [("part", "measure", "figure", "target", "result")]
    for part in parts:
        for f in part.figures:
            verdict = "-" if f.ok is None else ("pass" if f.ok else "FAIL")
            rows.append((f.part, f.measure, f.figure, f.target, verdict))
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(5)]
    line = "-+-".join("-" * w for w in widths)
    out = []
    for n, r in enumerate(rows):
        out.append(" | ".join(c[:widths[i]].ljust(widths[i]) for i, c in enumerate(r)))
        if n == 0:
            out.append(line)
    return "\n".join(out)


def main(argv):
    args = parse_args(argv)
    if args.inner:
        workdir = args.workdir or common.workdir()
        os.makedirs(workdir, exist_ok=True)
        if os.environ.get("RELIABILITY_IN_NETNS") == "1":
            subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
        part = run_part_here(args.inner, args, workdir)
        print(JSON_MARK + json.dumps(part.to_json()), flush=True)
        return 0
    if not os.access(args.binary, os.X_OK):
        print(f"no binary at {args.binary}: cargo build --release -p event-hooks-local",
              file=sys.stderr)
        return 2
    workdir = common.workdir()
    print(f"reliability: parts {', '.join(args.parts)}{' (quick)' if args.quick else ''}; "
          f"binary {args.binary}; work directory {workdir}", flush=True)
    results = []
    for name in args.parts:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        if name in IN_NETNS:
            part = run_part_in_netns(name, args, workdir, argv)
        else:
            part = run_part_here(name, args, workdir)
        part.seconds = part.seconds or time.monotonic() - started
        results.append(part)
        print(f"== {name}: {part.seconds:.0f} s", flush=True)
        for note in part.notes[:30]:
            print(f"   note: {note}", flush=True)
    print()
    print(table(results))
    print()
    print("time per part: " + ", ".join(f"{p.name} {p.seconds:.0f} s" for p in results))
    failed = [f for p in results for f in p.figures if f.ok is False]
    if not args.keep and not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs and data kept in {workdir}")
    print(f"reliability: {'FAIL (' + str(len(failed)) + ' figures missed their target)' if failed else 'all targets met'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
