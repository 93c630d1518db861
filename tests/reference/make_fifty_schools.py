"""Simulate the "50 schools" data set used by the reference posteriors.

Writes, next to this file:

* ``fifty_schools.csv``: one row per student, columns ``school`` (0..49) and ``score``;
* ``fifty_schools_truth.csv``: one row per school, columns ``school``, ``n`` and ``true_mean``.

Run with ``python tests/reference/make_fifty_schools.py``.
"""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
N_SCHOOLS = 50
SEED = 42


def simulate(seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 100, size=N_SCHOOLS)
    true_means = rng.normal(63, 2, N_SCHOOLS)
    scores = [rng.normal(true_means[j], 10, sizes[j]) for j in range(N_SCHOOLS)]
    data = pd.DataFrame(
        {
            "school": np.repeat(np.arange(N_SCHOOLS), sizes),
            "score": np.concatenate(scores),
        }
    )
    truth = pd.DataFrame({"school": np.arange(N_SCHOOLS), "n": sizes, "true_mean": true_means})
    return data, truth


def main() -> None:
    data, truth = simulate()
    data.to_csv(HERE / "fifty_schools.csv", index=False, float_format="%.17g")
    truth.to_csv(HERE / "fifty_schools_truth.csv", index=False, float_format="%.17g")
    print(f"wrote {len(data)} scores for {len(truth)} schools to {HERE}")


if __name__ == "__main__":
    main()
