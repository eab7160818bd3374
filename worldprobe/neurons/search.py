"""Single neurons that encode space or time: MLP neurons and residual-stream coordinates (docs/explanation/probes.md).

Selection on train rows, evaluation on test rows. Pass 1 streams sufficient statistics (sums, sums of squares and
cross-products with the targets) of every neuron over the train rows, so memory is O(neurons x targets), never
O(neurons x entities); the top k per layer and target by |Pearson r| are kept. Pass 2 records only those neurons on the
test rows and scores them: Spearman with the target, and R² of the straight line fitted on train (from the same
statistics). Each top neuron's input and output weights are compared (cosine) with the ridge probe direction of the same
layer of the activation cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.metrics import r2_score
from tqdm.auto import tqdm

from worldprobe import anchors
from worldprobe.checks import COUNT, LAYERS, NAME, SEED, checked_arguments
from worldprobe.config import DEFAULT_MODEL, DEFAULT_SEED, DEFAULT_TOP_K
from worldprobe.datasets.prompts import get_prompt
from worldprobe.datasets.registry import get_spec, load_user_specs
from worldprobe.errors import WorldprobeError
from worldprobe.extract.cache import open_cache, parse_layers
from worldprobe.extract.models import LoadedModel, load_requested, requested
from worldprobe.extract.options import Batching, ModelRequest
from worldprobe.extract.runner import default_batch_size, forward_batches, run_extraction
from worldprobe.extract.tokens import EncodedEntity, encode_entities
from worldprobe.probes.results import NEURON_COLUMNS, NEURONS_FILE, run_dir, run_key, write_neurons
from worldprobe.reuse import starting_work
from worldprobe.workspace import WORKSPACE, Workspace, as_workspace

CHUNK_ROWS = 4096


@dataclass
class CorrelationStats:
    """Streaming Pearson statistics of ``p`` features against ``k`` targets (float64, shifted for stability)."""

    n_features: int
    n_targets: int
    n: int = 0
    shift_x: np.ndarray | None = None
    shift_y: np.ndarray | None = None
    sx: np.ndarray = field(init=False)
    sxx: np.ndarray = field(init=False)
    sy: np.ndarray = field(init=False)
    syy: np.ndarray = field(init=False)
    sxy: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sx, self.sxx = np.zeros(self.n_features), np.zeros(self.n_features)
        self.sy, self.syy = np.zeros(self.n_targets), np.zeros(self.n_targets)
        self.sxy = np.zeros((self.n_features, self.n_targets))

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add a batch: ``x`` (b, p) feature values, ``y`` (b, k) targets."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
        if self.shift_x is None:
            self.shift_x, self.shift_y = x.mean(axis=0), y.mean(axis=0)
        x, y = x - self.shift_x, y - self.shift_y
        self.n += len(x)
        self.sx += x.sum(axis=0)
        self.sxx += (x * x).sum(axis=0)
        self.sy += y.sum(axis=0)
        self.syy += (y * y).sum(axis=0)
        self.sxy += x.T @ y

    def _moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = max(self.n, 1)
        mx, my = self.sx / n, self.sy / n
        var_x = np.maximum(self.sxx / n - mx**2, 0.0)
        var_y = np.maximum(self.syy / n - my**2, 0.0)
        cov = self.sxy / n - np.outer(mx, my)
        return mx, my, var_x, var_y, cov

    def pearson(self) -> np.ndarray:
        """(p, k) Pearson r; NaN for constant features (never ranked)."""
        _, _, var_x, var_y, cov = self._moments()
        denom = np.sqrt(np.outer(var_x, var_y))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / denom
        r[~(denom > 1e-12 * max(float(denom.max(initial=0.0)), 1e-300))] = np.nan
        return np.clip(r, -1.0, 1.0)

    def line(self, feature: int, target: int) -> tuple[float, float]:
        """Slope and intercept of the least-squares line target ~ feature on the accumulated rows."""
        mx, my, var_x, _, cov = self._moments()
        slope = cov[feature, target] / var_x[feature] if var_x[feature] > 0 else 0.0
        intercept = (my[target] + self.shift_y[target]) - slope * (mx[feature] + self.shift_x[feature])
        return float(slope), float(intercept)


def top_k(r: np.ndarray, k: int) -> np.ndarray:
    """(k', n_targets) feature indices with the largest |r| per target (NaN never chosen); k' = min(k, ranked)."""
    score = np.where(np.isnan(r), -np.inf, np.abs(r))
    ranked = np.isfinite(score).sum(axis=0)
    k = min(k, int(ranked.min()) if ranked.size else 0)
    order = np.argsort(-score, axis=0, kind="stable")
    return order[:k]


@dataclass
class Selection:
    """The top neurons of one layer and kind, chosen on train rows."""

    layer: int
    kind: str  # "mlp" | "residual"
    stats: CorrelationStats
    chosen: np.ndarray  # (k, n_targets) neuron indices
    r: np.ndarray  # (p, n_targets) train Pearson

    @property
    def neurons(self) -> np.ndarray:
        """Distinct chosen neuron indices (sorted), the columns pass 2 records."""
        return np.unique(self.chosen)


def select(layer: int, kind: str, stats_: CorrelationStats, k: int) -> Selection:
    r = stats_.pearson()
    return Selection(layer, kind, stats_, top_k(r, k), r)


def score(selection: Selection, test_values: np.ndarray, y_test: np.ndarray, target_names: Sequence[str]) -> list[dict]:
    """Rows of the ranked table for one selection; ``test_values`` (n_test, len(selection.neurons))."""
    column = {int(n): i for i, n in enumerate(selection.neurons)}
    y_test = np.asarray(y_test, dtype=np.float64).reshape(len(test_values), -1)
    rows = []
    for t, target in enumerate(target_names):
        for rank, neuron in enumerate(selection.chosen[:, t], start=1):
            x = np.asarray(test_values[:, column[int(neuron)]], dtype=np.float64)
            slope, intercept = selection.stats.line(int(neuron), t)
            constant = len(x) < 2 or np.ptp(x) == 0
            rows.append(
                {
                    "layer": selection.layer, "kind": selection.kind, "neuron": int(neuron), "target": target,
                    "rank": rank, "train_pearson": float(selection.r[neuron, t]),
                    "test_spearman": np.nan if constant else float(stats.spearmanr(x, y_test[:, t]).statistic),
                    "test_r2": float(r2_score(y_test[:, t], slope * x + intercept)) if len(x) > 1 else np.nan,
                }
            )  # fmt: skip
    return rows


# --- residual-stream coordinates from the activation cache ------------------------------------------------------


def residual_search(
    layer_array: Callable[[int], np.ndarray],
    layers: Sequence[int],
    y: np.ndarray,
    is_test: np.ndarray,
    target_names: Sequence[str],
    *,
    k: int = DEFAULT_TOP_K,
) -> list[dict]:
    """The top-k residual coordinates per layer and target: chosen on train rows, scored on test rows.

    ``layer_array(l)`` returns the (n_entities, d_model) array of layer ``l`` (e.g. a cache memmap), read in chunks.
    """
    y = np.asarray(y, dtype=np.float64).reshape(len(is_test), -1)
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    rows = []
    for layer in tqdm(layers, desc="residual neurons", unit="layer"):
        array = layer_array(layer)
        acc = CorrelationStats(array.shape[1], y.shape[1])
        for start in range(0, len(train), CHUNK_ROWS):
            part = train[start : start + CHUNK_ROWS]
            acc.update(array[part], y[part])
        selection = select(layer, "residual", acc, k)
        test_values = np.asarray(array[test][:, selection.neurons], dtype=np.float64)
        rows += score(selection, test_values, y[test], target_names)
    return rows


# --- MLP neurons via forward hooks ------------------------------------------------------------------------------


def _mlp_rows(
    loaded: LoadedModel,
    encoded: Sequence[EncodedEntity],
    rows: np.ndarray,
    layers: Sequence[int],
    batch_size: int,
    desc: str,
) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray]]]:
    """Forward the entities ``rows`` (positions in ``encoded``); yield (entity rows, {layer: (b, d_mlp) activations at
    the entity's last token}) per batch. Only one batch of activations is ever held."""
    capture = {f"mlp{layer}": anchors.block_part(loaded.model, layer, "mlp_activation") for layer in layers}
    subset = [encoded[i] for i in rows]
    with tqdm(total=len(rows), desc=desc, unit="entity", dynamic_ncols=True) as bar:
        for batch, found in forward_batches(loaded, subset, batch_size, capture_inputs=capture):
            bar.update(len(batch.indices))
            yield rows[batch.indices], {layer: found[f"mlp{layer}"] for layer in layers}


def mlp_search(
    loaded: LoadedModel,
    encoded: Sequence[EncodedEntity],
    y: np.ndarray,
    is_test: np.ndarray,
    target_names: Sequence[str],
    *,
    k: int = DEFAULT_TOP_K,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
) -> list[dict]:
    """Rank every MLP neuron of ``layers`` (1-based block numbers, like cache layers; default all) by |Pearson r| on
    the train rows and score the top ``k`` per layer and target on the test rows.

    ``encoded[i]`` is entity i rendered under the prompt (``worldprobe.extract.tokens.encode_entities``).
    """
    y = np.asarray(y, dtype=np.float64).reshape(len(is_test), -1)
    n_blocks = len(anchors.blocks(loaded.model))
    wanted = sorted({int(v) for v in (range(1, n_blocks + 1) if layers is None else layers) if v != 0})
    if not wanted or wanted[0] < 1 or wanted[-1] > n_blocks:
        raise WorldprobeError(f"MLP layers must be in 1..{n_blocks}, got {list(layers or [])}", field="layers")
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    acc: dict[int, CorrelationStats] = {}
    for entity_rows, found in _mlp_rows(loaded, encoded, train, wanted, batch_size, "neurons: train pass"):
        for layer, values in found.items():
            acc.setdefault(layer, CorrelationStats(values.shape[1], y.shape[1])).update(values, y[entity_rows])
    selections = [select(layer, "mlp", acc[layer], k) for layer in wanted]
    recorded = {s.layer: np.empty((len(test), len(s.neurons))) for s in selections}
    where = {row: i for i, row in enumerate(test)}
    for entity_rows, found in _mlp_rows(loaded, encoded, test, wanted, batch_size, "neurons: test pass"):
        slots = [where[r] for r in entity_rows]
        for s in selections:
            recorded[s.layer][slots] = found[s.layer][:, s.neurons]
    rows = []
    for s in selections:
        rows += score(s, recorded[s.layer], y[test], target_names)
    return rows


# --- weights against the probe direction ------------------------------------------------------------------------


def _cosine(vectors: np.ndarray, direction: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1) * np.linalg.norm(direction)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, vectors @ direction / norms, np.nan)


def _weights(module: Any) -> np.ndarray:
    return module.weight.detach().to(torch.float64).cpu().numpy()


def mlp_input_gain(model: torch.nn.Module, layer: int) -> np.ndarray | None:
    """The elementwise gain of the norm in front of block ``layer``'s MLP (its read direction in residual space is
    the read row times this gain), from the anchor table; None for a norm without weights."""
    norm = anchors.block_part(model, layer, "mlp_norm")
    if getattr(norm, "weight", None) is None:
        return None
    gain = _weights(norm)
    return gain + 1.0 if "Gemma" in type(norm).__name__ else gain  # Gemma norms scale by (1 + weight)


def weight_cosines(
    model: torch.nn.Module, layer: int, neurons: np.ndarray, direction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cosines with a probe direction in residual space of each neuron's input weights (its row of the MLP's read
    projection, the gate where there is one, times the norm gain) and output weights (its column of the
    projection whose input is the activation). Which modules: :mod:`worldprobe.anchors`; a GPT-2 ``Conv1D`` stores
    its weight transposed, which the residual width tells apart."""
    d_model = len(direction)
    w_in = _weights(anchors.block_part(model, layer, "mlp_read"))
    w_in = (w_in if w_in.shape[1] == d_model else w_in.T)[neurons]
    gain = mlp_input_gain(model, layer)
    if gain is not None:
        w_in = w_in * gain
    w_out = _weights(anchors.block_part(model, layer, "mlp_activation"))
    w_out = (w_out.T if w_out.shape[0] == d_model else w_out)[neurons]
    return _cosine(w_in, direction), _cosine(w_out, direction)


def add_cosines(
    rows: list[dict],
    directions: dict[int, np.ndarray],
    target_names: Sequence[str],
    model: torch.nn.Module | None = None,
) -> None:
    """Fill ``cos_in``/``cos_out`` of ranked rows in place from ``directions[layer]`` (n_targets, d_model) probe
    coefficients. MLP rows use the model's weights; a residual coordinate's cosine is its loading in the direction."""
    for row in rows:
        direction = directions.get(row["layer"])
        row["cos_in"] = row["cos_out"] = np.nan
        if direction is None:
            continue
        d = np.atleast_2d(direction)[list(target_names).index(row["target"])]
        if row["kind"] == "residual":
            row["cos_in"] = row["cos_out"] = float(d[row["neuron"]] / np.linalg.norm(d))
        elif model is not None:
            cin, cout = weight_cosines(model, row["layer"], np.array([row["neuron"]]), d)
            row["cos_in"], row["cos_out"] = float(cin[0]), float(cout[0])


def neuron_table(rows: list[dict], *, dataset: str, model: str) -> pd.DataFrame:
    """The ranked table with the columns of ``neurons.parquet`` (docs/design.md)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=[c for c in NEURON_COLUMNS if c not in ("dataset", "model")])
    frame.insert(0, "model", model)
    frame.insert(0, "dataset", dataset)
    for column in ("cos_in", "cos_out"):
        if column not in frame:
            frame[column] = np.nan
    return frame[list(NEURON_COLUMNS)].sort_values(["kind", "target", "layer", "rank"], ignore_index=True)


# --- the whole search over a dataset ----------------------------------------------------------------------------


def probe_directions(
    layer_array: Callable[[int], np.ndarray], layers: Sequence[int], y: np.ndarray, is_test: np.ndarray
) -> dict[int, np.ndarray]:
    """The ridge probe's coefficients (n_targets, d_model), in raw residual units, per layer (fit on train rows)."""
    from worldprobe.probes.ridge import RidgeProbe

    out = {}
    for layer in tqdm(layers, desc="neurons: probe directions", unit="layer"):
        probe = RidgeProbe().fit(layer_array(layer)[np.flatnonzero(~is_test)], y[~is_test])
        out[layer] = np.atleast_2d(probe.coef_)
    return out


def _existing_dtype(ws: Workspace, dataset: str, model: str, prompt: str, limit: int | None) -> str | None:
    """The dtype of a finished cache of this request already in the workspace (the largest, as find_cache picks)."""
    from worldprobe.extract.cache import MissingCacheError, find_cache, read_manifest

    try:
        return str(read_manifest(find_cache(dataset, model, prompt, workspace=ws))["dtype"])
    except (MissingCacheError, WorldprobeError):
        return None


@checked_arguments(dataset=NAME, prompt=NAME, workspace=WORKSPACE, top_k=COUNT, layers=LAYERS, limit=COUNT,
                   seed=SEED, batch_size=COUNT)  # fmt: skip
def find_neurons(
    dataset: str,
    model: str | torch.nn.Module | ModelRequest = DEFAULT_MODEL,
    prompt: str = "empty",
    *,
    workspace: Workspace | str | Path | None = None,
    top_k: int = DEFAULT_TOP_K,
    layers: str | Sequence[int] = "all",
    limit: int | None = None,
    seed: int = DEFAULT_SEED,
    batch_size: int | None = None,
) -> Path:
    """Rank MLP neurons and residual coordinates of ``model`` for ``dataset``'s targets; write ``neurons.parquet``
    into ``results/<dataset>__<model>__<prompt>__neurons__<key>/`` and return the folder.

    ``model`` as for ``run_extraction`` (a request's dtype ``auto`` takes a finished cache of the request in another
    dtype, a study's ``fast`` one, when there is one). Uses (or builds) the activation cache for the residual search
    and the probe directions, and runs the model twice more (train rows, then test rows) for the MLP neurons. A
    finished search with the same inputs is not redone.
    """
    request = requested(model, seed)
    model = request.name
    ws = as_workspace(workspace)
    load_user_specs(ws.datasets)
    spec = get_spec(dataset)
    if request.dtype == "auto":  # a finished cache of the request in another dtype (a study's "fast" one) is reused
        request = replace(request, dtype=_existing_dtype(ws, dataset, model, prompt, limit) or "auto")
    path = run_extraction(dataset, request, prompt, workspace=ws, layers=layers, limit=limit, seed=seed,
                          batching=Batching(batch_size=batch_size))  # fmt: skip
    cache = open_cache(path)
    chosen = parse_layers(layers, cache.n_layers)
    settings = {"search": "neurons", "top_k": top_k, "layers": chosen, "seed": seed, "targets": list(spec.targets)}
    key = run_key([cache.manifest], settings)
    folder = run_dir(ws.results, dataset, model, prompt, "neurons", key)
    if (folder / NEURONS_FILE).exists():
        return folder
    starting_work(f"{folder.name}")
    entities = cache.entities.reset_index(drop=True)
    y = entities[list(spec.targets)].to_numpy(dtype=np.float64)
    is_test = entities["is_test"].to_numpy(dtype=bool)
    rows = residual_search(cache.layer, chosen, y, is_test, spec.targets, k=top_k)
    network = None
    if any(layer >= 1 for layer in chosen):
        loaded = load_requested(request)  # as run_extraction asks
        encoded = encode_entities(
            loaded.tokenizer, entities["text"].tolist(), get_prompt(dataset, prompt), seed,
            keys=entities["entity_id"].astype(str).tolist(),
        )  # fmt: skip
        rows += mlp_search(
            loaded, encoded, y, is_test, spec.targets, k=top_k, layers=[v for v in chosen if v >= 1],
            batch_size=batch_size or default_batch_size(loaded),
        )  # fmt: skip
        network = loaded.model
    add_cosines(rows, probe_directions(cache.layer, chosen, y, is_test), spec.targets, network)
    record = {"dataset": dataset, "model": model, "prompt": prompt, "run_key": key, "settings": settings,
              "cache": {"dataset_fingerprint": cache.manifest.get("dataset_fingerprint"),
                        "entity_order_sha256": cache.manifest.get("entity_order_sha256")}}  # fmt: skip
    return write_neurons(folder, neuron_table(rows, dataset=dataset, model=model), record)
