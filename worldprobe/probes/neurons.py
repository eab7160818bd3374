"""Single neurons that encode space or time: MLP neurons and residual-stream coordinates (science.md section 5).

Selection on train rows, evaluation on test rows. Pass 1 streams sufficient statistics (sums, sums of squares and
cross-products with the targets) of every neuron over the train rows, so memory is O(neurons x targets), never
O(neurons x entities); the top k per layer and target by |Pearson r| are kept. Pass 2 records only those neurons on the
test rows and scores them: Spearman with the target, and R² of the straight line fitted on train (from the same
statistics). Each top neuron's input and output weights are compared (cosine) with the ridge probe direction of the same
layer of the activation cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.metrics import r2_score
from tqdm.auto import tqdm

from worldprobe.errors import WorldprobeError

NEURON_COLUMNS = (
    "dataset", "model", "layer", "kind", "neuron", "target", "rank",
    "train_pearson", "test_spearman", "test_r2", "cos_in", "cos_out",
)  # fmt: skip
DEFAULT_TOP_K = 10
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


@dataclass
class Batch:
    """One forward pass: entity rows (positions in the entity table), the model inputs and each row's probed token."""

    rows: np.ndarray
    inputs: dict[str, torch.Tensor]
    last: torch.Tensor  # (b,) index of the entity's last token in each sequence


def mlp_modules(decoder_layers: Sequence[torch.nn.Module]) -> list[torch.nn.Module]:
    """The down projection of every block (its input is the MLP's neuron activations, e.g. act(gate) * up)."""
    found = []
    for i, block in enumerate(decoder_layers):
        down = getattr(getattr(block, "mlp", None), "down_proj", None)
        if down is None:
            raise WorldprobeError(
                f"block {i} ({type(block).__name__}) has no mlp.down_proj",
                hint="the neuron search supports Llama-style MLPs (Llama, Mistral, Qwen2, Gemma, SmolLM)",
            )
        found.append(down)
    return found


def _run_with_hooks(
    model: torch.nn.Module,
    modules: Sequence[torch.nn.Module],
    batches: Iterable[Batch],
    columns: Sequence[np.ndarray | None],
) -> Iterator[tuple[Batch, list[np.ndarray | None]]]:
    """Forward every batch; yield, per block, the chosen neuron columns (None: all; empty: skip) at the last token."""
    captured: dict[int, np.ndarray] = {}
    current: dict[str, torch.Tensor] = {}

    def hook(index: int):
        def pre_hook(_module, args):
            cols = columns[index]
            if cols is not None and len(cols) == 0:
                return
            acts = args[0][torch.arange(args[0].shape[0]), current["last"]]
            if cols is not None:
                acts = acts[:, torch.as_tensor(cols, dtype=torch.long)]
            captured[index] = acts.detach().to(torch.float64).cpu().numpy()

        return pre_hook

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        with torch.inference_mode():
            for batch in batches:
                captured.clear()
                current["last"] = batch.last.to(next(model.parameters()).device)
                model(**batch.inputs)
                yield batch, [captured.get(i) for i in range(len(modules))]
    finally:
        for handle in handles:
            handle.remove()


def mlp_search(
    model: torch.nn.Module,
    decoder_layers: Sequence[torch.nn.Module],
    make_batches: Callable[[np.ndarray], Iterable[Batch]],
    y: np.ndarray,
    is_test: np.ndarray,
    target_names: Sequence[str],
    *,
    k: int = DEFAULT_TOP_K,
    layers: Sequence[int] | None = None,
) -> tuple[list[dict], list[Selection]]:
    """Rank every MLP neuron of the chosen ``layers`` (1-based block numbers, like cache layers) on train rows and
    score the top ``k`` per layer and target on test rows. ``make_batches(rows)`` yields :class:`Batch` es covering
    exactly ``rows`` (entity positions)."""
    y = np.asarray(y, dtype=np.float64).reshape(len(is_test), -1)
    modules = mlp_modules(decoder_layers)
    wanted = sorted(set(range(1, len(modules) + 1) if layers is None else (int(v) for v in layers if v >= 1)))
    if not wanted or wanted[-1] > len(modules):
        raise WorldprobeError(f"MLP layers must be in 1..{len(modules)}, got {list(layers or [])}", field="layers")
    columns: list[np.ndarray | None] = [None if i + 1 in wanted else np.array([], int) for i in range(len(modules))]
    acc: dict[int, CorrelationStats] = {}
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    for batch, acts in _run_with_hooks(model, modules, make_batches(train), columns):
        for i, values in enumerate(acts):
            if values is None:
                continue
            acc.setdefault(i + 1, CorrelationStats(values.shape[1], y.shape[1])).update(values, y[batch.rows])
    selections = [select(layer, "mlp", acc[layer], k) for layer in wanted]
    chosen = {s.layer: s.neurons for s in selections}
    columns = [chosen.get(i + 1, np.array([], int)) for i in range(len(modules))]
    recorded: dict[int, list[np.ndarray]] = {layer: [] for layer in wanted}
    order: list[np.ndarray] = []
    for batch, acts in _run_with_hooks(model, modules, make_batches(test), columns):
        order.append(batch.rows)
        for layer in wanted:
            recorded[layer].append(acts[layer - 1])
    position = np.argsort(np.concatenate(order)) if order else np.array([], int)
    rows = []
    for selection in selections:
        values = np.concatenate(recorded[selection.layer])[position] if order else np.empty((0, 0))
        rows += score(selection, values, y[np.sort(test)], target_names)
    return rows, selections


# --- weights against the probe direction ------------------------------------------------------------------------


def _cosine(vectors: np.ndarray, direction: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1) * np.linalg.norm(direction)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, vectors @ direction / norms, np.nan)


def mlp_input_gain(block: torch.nn.Module) -> np.ndarray | None:
    """The elementwise gain of the norm in front of the MLP (its read direction in residual space: gate row * gain)."""
    norm = getattr(block, "pre_feedforward_layernorm", None) or getattr(block, "post_attention_layernorm", None)
    weight = getattr(norm, "weight", None)
    if weight is None:
        return None
    gain = weight.detach().to(torch.float64).cpu().numpy()
    return gain + 1.0 if "Gemma" in type(norm).__name__ else gain  # Gemma norms scale by (1 + weight)


def weight_cosines(block: torch.nn.Module, neurons: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of each neuron's input (gate row, or up row without a gate, times the norm gain) and output
    (down_proj column) weights with a probe direction in residual space."""
    mlp = block.mlp
    reader = getattr(mlp, "gate_proj", None) or mlp.up_proj
    w_in = reader.weight.detach().to(torch.float64).cpu().numpy()[neurons]
    gain = mlp_input_gain(block)
    if gain is not None:
        w_in = w_in * gain
    w_out = mlp.down_proj.weight.detach().to(torch.float64).cpu().numpy()[:, neurons].T
    return _cosine(w_in, direction), _cosine(w_out, direction)


def add_cosines(
    rows: list[dict],
    directions: dict[int, np.ndarray],
    target_names: Sequence[str],
    decoder_layers: Sequence[torch.nn.Module] | None = None,
) -> None:
    """Fill ``cos_in``/``cos_out`` of ranked rows in place from ``directions[layer]`` (n_targets, d_model) probe
    coefficients. MLP rows use the block's weights; a residual coordinate's cosine is its loading in the direction."""
    for row in rows:
        direction = directions.get(row["layer"])
        row["cos_in"] = row["cos_out"] = np.nan
        if direction is None:
            continue
        d = np.atleast_2d(direction)[list(target_names).index(row["target"])]
        if row["kind"] == "residual":
            row["cos_in"] = row["cos_out"] = float(d[row["neuron"]] / np.linalg.norm(d))
        elif decoder_layers is not None:
            cin, cout = weight_cosines(decoder_layers[row["layer"] - 1], np.array([row["neuron"]]), d)
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
