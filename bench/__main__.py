"""Run every benchmark (or those named on the command line) and write build/bench/*.json."""

import argparse
import importlib
import json
import pathlib
import sys

BENCHMARKS = ["pvec", "dma", "datapath", "datapath_synth"]
OUT = pathlib.Path(__file__).resolve().parent.parent / "build" / "bench"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (of {', '.join(BENCHMARKS)})")
    parser.add_argument("--out", type=pathlib.Path, default=OUT, help="output folder")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        result = module.run()
        path = args.out / f"{name.replace('_', '-')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{name}: wrote {path}")
        for check, (value, limit, ok) in result.get("checks", {}).items():
            print(f"  {check} = {value:.4g} (limit {limit}) {'ok' if ok else 'FAILED'}")
            if not ok:
                failed.append(f"{name}.{check}")
    if failed:
        print(f"benchmark limits not met: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
