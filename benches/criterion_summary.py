#!/usr/bin/env python3
"""Print the median and mean of every criterion bench from the last run (target/criterion).

Usage: cargo bench -p velro-benches --bench engine && python3 benches/criterion_summary.py
"""
import glob
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
for path in sorted(glob.glob(os.path.join(root, "**", "new", "estimates.json"), recursive=True)):
    bench = os.path.relpath(os.path.dirname(os.path.dirname(path)), root)
    est = json.load(open(path))
    median = est["median"]["point_estimate"] / 1000
    mean = est["mean"]["point_estimate"] / 1000
    print(f"{bench:42s} median {median:10.2f} µs   mean {mean:10.2f} µs")
