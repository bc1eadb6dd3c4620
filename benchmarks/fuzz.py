"""Long fuzz run: mutated image bytes, malformed YAML configs and model cards (the test suite runs a few hundred).

Run: .venv/bin/python benchmarks/fuzz.py [--examples 3000] [--json PATH]
Prints, per target, the inputs tried and crashes found (any outcome other than a result or SmallvisionError), and
writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tables import RESULTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fuzzing import (  # noqa: E402
    CARDS,
    CONFIGS,
    card_bytes,
    card_target,
    config_target,
    decode_target,
    mutated_images,
)

TARGETS = {
    "image bytes (mutated real files)": (mutated_images(), decode_target),
    "image bytes (random)": (st.binary(max_size=400), decode_target),
    "config YAML (structured)": (CONFIGS, lambda v: config_target(yaml.safe_dump(v, allow_unicode=True))),
    "config YAML (any text)": (st.text(max_size=400), config_target),
    "model card JSON (malformed)": (CARDS, lambda c: card_target(card_bytes(c))),
    "model card (random bytes)": (st.binary(max_size=400), card_target),
}


def run(name: str, strategy, target, examples: int) -> dict:
    """Fuzz one target; return inputs tried and the crash found (hypothesis stops at the first)."""
    tried = 0

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def check(value):
        nonlocal tried
        tried += 1
        target(value)

    t0 = time.perf_counter()
    crash = None
    try:
        check()
    except Exception:  # a crash: anything but a result or SmallvisionError
        crash = traceback.format_exc(limit=3)
    return {
        "target": name,
        "inputs": tried,
        "crashes": int(crash is not None),
        "seconds": round(time.perf_counter() - t0, 1),
        "first_crash": crash,
    }


def main() -> None:
    """Fuzz every target; print a table; write JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--examples", type=int, default=3000)
    ap.add_argument("--json", type=Path, default=RESULTS / "fuzz.json")
    args = ap.parse_args()
    rows = [run(name, strategy, target, args.examples) for name, (strategy, target) in TARGETS.items()]
    print(f"{'target':<36} {'inputs':>8} {'crashes':>8} {'seconds':>8}")
    for r in rows:
        print(f"{r['target']:<36} {r['inputs']:>8} {r['crashes']:>8} {r['seconds']:>8}")
        if r["first_crash"]:
            print(r["first_crash"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
