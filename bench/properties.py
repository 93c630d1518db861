"""The property tests with fresh random examples, many more than the suite's fixed ten.

The suite runs tests/test_properties.py under hypothesis' ``ci`` profile: the same ten examples
a test on every run, so that CI is reproducible. This script runs them under the ``random``
profile instead (new examples on every run, ``--examples`` of them a test) and prints a table
of each test's outcome and time; a failure prints hypothesis' smallest failing example.

    python bench/properties.py                  # 200 examples a test
    python bench/properties.py --examples 1000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="examples a test")
    args = parser.parse_args()
    env = {
        **os.environ,
        "HYPOTHESIS_PROFILE": "random",
        "POOLWISE_PROPERTY_EXAMPLES": str(args.examples),
    }
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "properties.xml"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
                "tests/test_properties.py",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        cases = ET.parse(report).getroot().iter("testcase")
        print(f"{'test':<58} {'outcome':>8} {'seconds':>8}")
        for case in cases:
            failed = case.find("failure") is not None or case.find("error") is not None
            outcome = "FAILED" if failed else "passed"
            print(f"{case.get('name'):<58} {outcome:>8} {float(case.get('time')):>8.1f}")
    print(f"{args.examples} random examples a test")
    if run.returncode:
        print(run.stdout[-6000:])
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
