"""Serving the reward model inline: onnxruntime, one row, once per shape and version.

`load` opens the registry's prod, approved version of a model only if its
artifact's sha256 matches the registry: anything else (no such version, not
approved, a missing or altered file, a file onnxruntime cannot read) is
refused with a reason the proxy logs, and the proxy scores with the
heuristic instead (flagged as such wherever a score is shown).

The model predicts log1p(mean latency in ms) of a shape from `INPUTS`; the
heuristic predicts the latency seen so far, else one from the plan's cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import onnxruntime as ort

from sqlx.models.features import INPUTS
from sqlx.models.registry import Entry, Registry, RegistryError

HEURISTIC = "heuristic"
# Milliseconds per unit of planner cost, for the heuristic's guess at a shape never timed.
_MS_PER_COST = 0.01


@dataclass(frozen=True)
class RewardModel:
    entry: Entry
    session: ort.InferenceSession
    input_name: str
    width: int

    @property
    def version(self) -> str:
        return self.entry.ref

    def predict_ms(self, row: np.ndarray) -> float:
        out = self.session.run(None, {self.input_name: row[:, : self.width]})[0]
        return max(math.expm1(float(np.ravel(out)[0])), 0.0)


class Loaded(NamedTuple):
    model: RewardModel | None
    reason: str  # why it is (or is not) served


def load(registry: Registry, model_id: str) -> Loaded:
    try:
        entry = registry.serving(model_id)
    except RegistryError as exc:
        return Loaded(None, str(exc))
    if entry is None:
        return Loaded(None, f"no prod, approved version of {model_id} in {registry.path}")
    problem = registry.check(entry)
    if problem:
        return Loaded(None, f"{entry.ref} refused: {problem}")
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one row at a time: threads only add overhead
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(registry.artifact(entry)), options,
                                       providers=["CPUExecutionProvider"])  # fmt: skip
    except Exception as exc:  # onnxruntime raises its own types for a bad file
        return Loaded(None, f"{entry.ref} refused: onnxruntime cannot load it ({exc})")
    first = session.get_inputs()[0]
    width = first.shape[1] if isinstance(first.shape[1], int) else len(INPUTS)
    if width > len(INPUTS):
        return Loaded(None, f"{entry.ref} refused: it reads {width} inputs, this proxy has "
                            f"{len(INPUTS)}")  # fmt: skip
    return Loaded(RewardModel(entry, session, first.name, width), f"{entry.ref} served")


def heuristic_ms(observed_ms: float | None, plan_cost: float | None) -> float:
    """A latency guess without a model: what the shape took, else its plan's cost."""
    if observed_ms is not None:
        return observed_ms
    if plan_cost is not None:
        return plan_cost * _MS_PER_COST
    return 1.0
