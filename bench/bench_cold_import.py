"""Cold start of the app's import: ``import function_app`` in a fresh interpreter.

Graph's validation handshake must be answered within 10 s of a cold start; the import of
the app is the part of it this project controls. Each figure is the median wall time of
fresh subprocesses, next to the floor measured in the same run and an empty interpreter.
The floor is what the Functions worker loads for this app anyway: ``azure.functions`` and,
since the app is on HTTP streams (functions/http.py), the FastAPI extension the worker
starts its web server from. ``import azure.functions`` alone is printed beside it. Target:
<= 1.5x the floor. For comparison, the import of Microsoft's Graph SDK (``msgraph``) when
installed.

    python bench/bench_cold_import.py [--runs 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SUBJECTS = {
    "empty interpreter": "pass",
    "import azure.functions": "import azure.functions",
    "azure.functions + HTTP streams (floor)": "import azure.functions, azurefunctions.extensions.http.fastapi",
    "import function_app": "import function_app",
}
HEAVY = ("msal", "azure.identity", "azure.keyvault", "azure.data.tables", "azure.storage.queue", "requests")


def cold(code: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    subjects = dict(SUBJECTS)
    if importlib.util.find_spec("msgraph") is not None:
        subjects["import msgraph (Graph SDK)"] = "import msgraph"
    timings: dict[str, list[float]] = {name: [] for name in subjects}
    for code in subjects.values():
        cold(code)  # fill the OS file cache once; byte code is already compiled
    for _ in range(args.runs):  # interleaved, so that load on the machine hits all alike
        for name, code in subjects.items():
            timings[name].append(cold(code))
    medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    floor = medians["azure.functions + HTTP streams (floor)"]
    print(f"cold import, median of {args.runs} fresh interpreters ({os.cpu_count()} CPU(s))")
    for name, value in medians.items():
        print(f"{name:40}{value:9.1f} ms{value / floor:8.2f}x floor")
    if "import msgraph (Graph SDK)" not in medians:
        print(f"{'import msgraph (Graph SDK)':40}   not installed")
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, function_app; print(' '.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = sorted({m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)})
    print("heavy SDKs loaded by import function_app:", ", ".join(heavy) or "none")
    ratio = medians["import function_app"] / floor
    print(f"target <= 1.5x the floor: {ratio:.2f}x, {'met' if ratio <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
