import os

import matplotlib
from hypothesis import HealthCheck, settings

matplotlib.use("Agg")

# "ci" (the default): the same examples on every run and no example database, so a run is
# reproducible; "random": fresh examples, many more of them (bench/properties.py)
settings.register_profile(
    "ci",
    max_examples=10,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "random",
    max_examples=int(os.environ.get("POOLWISE_PROPERTY_EXAMPLES", "200")),
    derandomize=False,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
