"""Run the scoring benchmark without the console script: ``python bench/bench_scoring.py --json``.

Same options and output as ``fraudstream bench scoring``; the logic lives in ``scoring/bench.py`` so the
installed console script can import it."""

from __future__ import annotations

import argparse
import sys

from scoring.bench import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench_scoring", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
