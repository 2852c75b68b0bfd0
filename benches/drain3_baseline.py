"""Drain3 baseline for the throughput bench: reads lines on stdin, mines them with Drain3's
default configuration, prints lines per second (timing excludes reading stdin)."""
import sys
import time

from drain3 import TemplateMiner

lines = sys.stdin.read().splitlines()
miner = TemplateMiner()
start = time.perf_counter()
for line in lines:
    miner.add_log_message(line)
elapsed = time.perf_counter() - start
print(len(lines) / elapsed)
