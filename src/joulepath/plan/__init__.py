"""The AI-factory planner: for a demand curve, latency targets, a model and a site, which accelerators,
how many, with what parallelism, batch cap, precision, power cap, rack form and cooling, whether to
split prefill from decode, and where more GPUs or more megawatts stop paying.

Imports `hw` and `facility` only (never torch, never the layers above). Data flow:
`PlanInputs` -> `search.candidates` -> `evaluate.evaluate` (hardware model, racks, feed, facility twin,
prices) -> `search.plan` (Pareto front, chosen plan with reasons, diminishing-returns curves) -> `Plan`.
"""

from joulepath.plan.evaluate import Candidate, Evaluation, evaluate
from joulepath.plan.inputs import Demand, PlanInputs, Prices, SearchSpace, Site, Slo, default_prices

__all__ = [
    "Candidate",
    "Demand",
    "Evaluation",
    "PlanInputs",
    "Prices",
    "SearchSpace",
    "Site",
    "Slo",
    "default_prices",
    "evaluate",
]
