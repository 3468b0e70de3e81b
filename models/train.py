"""Training the reward model from the ATS archive (scikit-learn, exported with skl2onnx).

Each archive row is one query shape over one window: its AIR and plan
features, and its mean latency. The model is a small feed-forward network
(standardised inputs, two hidden layers) fitted to log1p(latency ms), so one
slow shape does not drown the fast ones. A fifth of the rows (fixed seed) is
held out and the error on it is reported and stored with the version.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sqlx.models.features import INPUTS, NO_PLAN
from sqlx.models.registry import Entry, Registry

MIN_ROWS = 10
EPOCHS = 300
ProgressFn = Callable[[int, int, float], None]


class TrainingError(Exception):
    pass


def read_archive(folder: Path) -> dict[str, list[Any]]:
    files = sorted(Path(folder).glob("ats-*.parquet"))
    if not files and (Path(folder) / "ats").is_dir():
        files = sorted((Path(folder) / "ats").glob("ats-*.parquet"))
    if not files:
        raise TrainingError(f"no archive files (ats-*.parquet) in {folder}")
    columns = ("features", "plan_features", "latency_ms_mean", "calls", "fingerprint")
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for f in files:
        schema = pq.read_schema(f)
        table = pq.read_table(f, columns=[c for c in columns if c in schema.names])
        for c in columns:
            if c in table.column_names:
                out[c].extend(table.column(c).to_pylist())
            else:
                out[c].extend([list(NO_PLAN)] * table.num_rows)
    return out


def bar(done: int, total: int, loss: float) -> None:
    width = 30
    filled = int(width * done / total)
    sys.stderr.write(f"\rtraining [{'#' * filled}{'.' * (width - filled)}] "
                     f"{done}/{total} epochs  loss {loss:.4f}")  # fmt: skip
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def train(archive: Path, registry: Registry, model_id: str,
          progress: ProgressFn | None = bar) -> tuple[Entry, dict[str, float]]:  # fmt: skip
    """Fit, hold out, export and register a new staging version."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.monotonic()
    data = read_archive(archive)
    rows = [[*a, *p] for a, p in zip(data["features"], data["plan_features"], strict=True)]
    x = np.asarray(rows, dtype=np.float32)
    y = np.log1p(np.asarray(data["latency_ms_mean"], dtype=np.float64))
    if len(x) < MIN_ROWS:
        raise TrainingError(f"{len(x)} archive rows; at least {MIN_ROWS} are needed")
    if x.shape[1] != len(INPUTS):
        raise TrainingError(f"archive rows have {x.shape[1]} features, expected {len(INPUTS)}")
    order = np.random.default_rng(0).permutation(len(x))
    cut = max(1, len(x) // 5)
    test, fit = order[:cut], order[cut:]
    network = MLPRegressor(hidden_layer_sizes=(32, 16), learning_rate_init=0.003,
                           max_iter=1, warm_start=True, random_state=0)  # fmt: skip
    model = make_pipeline(StandardScaler(), network)
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(1, EPOCHS + 1):
            model.fit(x[fit], y[fit])
            if progress is not None and (epoch % 10 == 0 or epoch == EPOCHS):
                progress(epoch, EPOCHS, float(network.loss_))
    predicted = model.predict(x[test])
    mae_log = float(np.mean(np.abs(predicted - y[test])))
    mae_ms = float(np.mean(np.abs(np.expm1(predicted) - np.expm1(y[test]))))
    variance = float(np.var(y[test]))
    r2 = 1.0 - float(np.mean((predicted - y[test]) ** 2)) / variance if variance > 0 else 0.0
    onnx = convert_sklearn(model, initial_types=[("input", FloatTensorType([None, len(INPUTS)]))],
                           target_opset=17)  # fmt: skip
    with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as out:
        out.write(onnx.SerializeToString())
    metrics = {
        "rows": float(len(x)), "held_out_rows": float(len(test)),
        "shapes": float(len(set(data["fingerprint"]))),
        "held_out_mae_log_ms": round(mae_log, 5), "held_out_mae_ms": round(mae_ms, 5),
        "held_out_r2": round(r2, 5), "loss": round(float(network.loss_), 6),
        "train_s": round(time.monotonic() - started, 3),
        "size_bytes": float(Path(out.name).stat().st_size),
    }  # fmt: skip
    if not math.isfinite(metrics["held_out_mae_ms"]):
        Path(out.name).unlink()
        raise TrainingError("training diverged")
    return registry.register(model_id, Path(out.name), metrics), metrics
