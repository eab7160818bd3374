"""What ``ask`` and ``steer`` share: the activation cache and its probe at the train-chosen layer, the entities to
ask, the rendered prompts, group centroids, and the numeric reading of an answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.datasets.registry import get_spec, load_user_specs
from worldprobe.errors import WorldprobeError
from worldprobe.extract.cache import ActivationCache, find_cache, open_cache
from worldprobe.extract.options import ModelRequest
from worldprobe.extract.tokens import EncodedEntity
from worldprobe.interventions import direction, questions
from worldprobe.interventions.parse import GroupVocabulary
from worldprobe.interventions.questions import Question
from worldprobe.probes.metrics import haversine_km
from worldprobe.probes.ridge import RidgeProbe
from worldprobe.workspace import Workspace


@dataclass
class Setup:
    """One dataset x model x question: the cache, its entities, the probe at its layer and its predictions."""

    workspace: Workspace
    dataset: str
    model: str
    prompt: str
    question: Question
    cache: ActivationCache
    entities: pd.DataFrame  # cache order
    targets: list[str]
    y: np.ndarray  # (n, k) targets in cache order
    train: np.ndarray  # bool (n,)
    choice: direction.LayerChoice
    probe: RidgeProbe
    pred: np.ndarray  # (n, k) probe predictions at the chosen layer, every row
    vocabulary: GroupVocabulary | None
    centroids: pd.DataFrame | None  # group -> the point it stands for (group questions)

    @property
    def layer(self) -> int:
        return self.choice.layer

    @property
    def n_layers(self) -> int:
        return int(self.cache.manifest["n_layers"])


def cache_manifest(workspace: Workspace, dataset: str, model: str, prompt: str, *, revision: str | None = None,
                   dtype: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The manifest of the cache :func:`prepare` opens (to check a request against it before any work)."""
    from worldprobe.extract.cache import read_manifest

    return read_manifest(find_cache(dataset, model, prompt, "last", workspace=workspace,
                                    prefer={"dtype": dtype} if dtype else None,
                                    **({"revision": revision} if revision else {})))  # fmt: skip


def prepare(
    workspace: Workspace, dataset: str, model: str, prompt: str, question: str | None, *, layer: int | None = None,
    steerable: bool = False, revision: str | None = None, dtype: str | None = None, progress: bool = True,
) -> Setup:  # fmt: skip
    """Open the cache of ``(dataset, model, prompt)``, choose the layer on train rows, fit the probe there.

    ``dtype``: the dtype the model runs in (resolved, e.g. ``float32``): its cache is taken when there are several.
    ``steerable``: choose among the layers before the last block only (an edit after the last block is read by no
    later position, so it cannot move an answer)."""
    load_user_specs(workspace.datasets)
    spec = get_spec(dataset)
    asked = questions.get_question(dataset, question)
    cache = open_cache(find_cache(dataset, model, prompt, "last", workspace=workspace,
                                  prefer={"dtype": dtype} if dtype else None,
                                  **({"revision": revision} if revision else {})))  # fmt: skip
    entities = cache.entities.reset_index(drop=True)
    targets = list(spec.targets)
    y = entities[targets].to_numpy(dtype=np.float64)
    valid = np.isfinite(y).all(axis=1)
    train = valid & ~entities["is_test"].to_numpy(dtype=bool)
    if train.sum() < 3 or (valid & ~train).sum() < 1:
        raise WorldprobeError(f"too few entities with a target in the cache: {int(train.sum())} train", file=cache.path)
    n_layers = int(cache.manifest["n_layers"])
    candidates = [v for v in cache.layers if not steerable or layer is not None or v < n_layers]
    choice = None if layer is not None else stored_choice(workspace, cache, candidates)
    if choice is None:
        choice = direction.select_layer(cache.layer, candidates, y, train, override=layer, progress=progress)
    if steerable and layer is None:
        choice = direction.LayerChoice(choice.layer, f"{choice.criterion}, among layers before the last block",
                                       choice.scores)  # fmt: skip
    x = cache.layer(choice.layer)
    probe = direction.fit_probe(x, y, train)
    pred = np.asarray(probe.predict(np.asarray(x, dtype=np.float32)), dtype=np.float64).reshape(len(y), -1)
    vocabulary = centroids = None
    if asked.kind == "group":
        column = asked.truth[0]
        if column not in entities.columns:
            raise WorldprobeError(f"the entity table has no column {column!r} to check answers against",
                                  file=cache.path, field=column)  # fmt: skip
        vocabulary = questions.vocabulary(dataset, entities[column].dropna().astype(str).tolist())
        centroids = group_centroids(dataset, entities, column, targets, train)
    return Setup(workspace, dataset, model, prompt, asked, cache, entities, targets, y, train, choice, probe, pred,
                 vocabulary, centroids)  # fmt: skip


def stored_choice(workspace: Workspace, cache: ActivationCache, candidates: list[int]) -> direction.LayerChoice | None:
    """The layer choice a finished ridge probe run of this very cache already made (the same rule: leave-one-out R²
    on train rows, with the probe stage's default settings, every candidate layer scored), or None."""
    from worldprobe.probes.results import summaries
    from worldprobe.probes.ridge import DEFAULT_ALPHAS, DEFAULT_STANDARDIZE
    from worldprobe.probes.selection import criterion, select_layer

    for folder, summary in summaries(workspace.results):
        settings, used = summary.get("settings") or {}, summary.get("cache") or {}
        if (summary.get("probe") != "ridge" or not summary.get("complete") or settings.get("target") is not None
                or settings.get("log_target") or settings.get("standardize") != DEFAULT_STANDARDIZE
                or settings.get("alphas") != [float(a) for a in DEFAULT_ALPHAS]
                or Path(str(used.get("path") or "")).name != Path(cache.path).name  # (its identity; moved or not)
                or used.get("dataset_fingerprint") != cache.manifest.get("dataset_fingerprint")
                or used.get("entity_order_sha256") != cache.manifest.get("entity_order_sha256")):  # fmt: skip
            continue
        scores = {int(k): float(v) for k, v in summary.get("selection", {}).items()}
        if not set(candidates) <= set(scores):
            continue
        chosen = {v: scores[v] for v in candidates}
        return direction.LayerChoice(select_layer(chosen), f"{criterion('ridge')} (scores of the probe run "
                                     f"{folder.name})", chosen)  # fmt: skip
    return None


def group_centroids(
    dataset: str, entities: pd.DataFrame, column: str, targets: list[str], rows: np.ndarray
) -> pd.DataFrame:
    """The point an answer naming a group stands for: a representative point inside the group's outline (the
    largest part of a country, state or borough, ``worldprobe.geodata``), else the mean target over ``rows`` (train
    rows) of the group. Index: the canonical group; columns: the targets."""
    part = entities.loc[rows, [column, *targets]].dropna()
    means = part.groupby(part[column].astype(str))[targets].mean()
    outlines = _outlines(dataset)
    points = pd.DataFrame(
        [_inside(geometry) for geometry in outlines.to_numpy()], index=outlines.index, columns=["latitude", "longitude"]
    )
    return pd.concat([points, means[~means.index.isin(points.index)]])[targets]


def _outlines(dataset: str) -> pd.Series:
    """Group -> outline geometry for a dataset's group question."""
    from worldprobe import geodata

    if dataset == "world_place":
        table = geodata.world_countries()
        return table.set_index("name")["geometry"]
    if dataset == "us_place":
        return geodata.us_states(contiguous=False).set_index("state_id")["geometry"]
    return geodata.nyc_boroughs().set_index("name")["geometry"]


def _inside(geometry: Any) -> tuple[float, float]:
    """(lat, lon) of a point inside the largest part of an outline."""
    parts = list(getattr(geometry, "geoms", [geometry]))
    point = max(parts, key=lambda p: p.area).representative_point()
    return float(point.y), float(point.x)


def nested_sample(mask: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of the rows where ``mask`` holds (all, or a seeded sample of ``limit``), in cache order. Samples are
    nested: with the same seed, the sample of 50 holds the sample of 20 (steer's entities are among ask's). Not
    ``datasets.table.sample_rows``, which samples a table's rows for ``--limit`` and need not nest."""
    rows = np.flatnonzero(np.asarray(mask, dtype=bool))
    if limit is not None:
        if limit < 1:
            raise WorldprobeError(f"--limit must be positive, not {limit}", field="limit")
        if limit < len(rows):
            rows = np.sort(np.random.default_rng(seed).permutation(rows)[:limit])
    if len(rows) == 0:
        raise WorldprobeError("no test entities to ask", field="is_test")
    return rows


def prompts_for(
    setup: Setup, tokenizer: Any, rows: np.ndarray, fmt: str, shots: int, seed: int,
    prefaces: Sequence[str] | None = None,
) -> tuple[list[str], list[EncodedEntity], str]:  # fmt: skip
    """The rendered prompt of each row (with its ``prefaces`` statement before the question, when given), its
    encoding, and the format used (``chat`` or ``fewshot``)."""
    used = questions.resolve_format(tokenizer, fmt)
    examples = []
    if used == "fewshot":
        train_rows = setup.entities[setup.train]
        examples = questions.fewshot_examples(train_rows, setup.question, shots, seed)
    texts = setup.entities.loc[rows, "text"].astype(str).tolist()
    prefaces = list(prefaces) if prefaces is not None else [""] * len(texts)
    rendered = [questions.render(tokenizer, setup.question, t, used, examples, preface)
                for t, preface in zip(texts, prefaces, strict=True)]  # fmt: skip
    texts = [r[0] for r in rendered]
    return texts, questions.encode_prompts(tokenizer, texts, [r[1] for r in rendered]), used


def parse_answers(setup: Setup, texts: list[str], rows: np.ndarray) -> pd.DataFrame:
    """Parsed columns of each answer (``questions.parse_answer``) and its numeric reading in target units
    (``reading_<target>``): the year, the coordinates, or the point of the named group (``group_centroids``)."""
    entity_texts = setup.entities.loc[rows, "text"].astype(str).tolist()
    parsed = pd.DataFrame([questions.parse_answer(setup.question, t, e, setup.vocabulary)
                           for t, e in zip(texts, entity_texts, strict=True)])  # fmt: skip
    reading = reading_of(setup, parsed)
    for j, target in enumerate(setup.targets):
        parsed[f"reading_{target}"] = reading[:, j]
    return parsed


def reading_of(setup: Setup, parsed: pd.DataFrame) -> np.ndarray:
    """(n, k) the answers in target units (NaN where unparsed, or a named group without outline or train entities)."""
    kind = setup.question.kind
    if kind == "year":
        return parsed[["answer_year"]].to_numpy(dtype=np.float64)
    if kind == "coordinates":
        return parsed[["answer_latitude", "answer_longitude"]].to_numpy(dtype=np.float64)
    assert setup.centroids is not None
    return setup.centroids.reindex(parsed["answer_group"].astype(object).to_numpy())[setup.targets].to_numpy(
        dtype=np.float64
    )


def nearest_group(setup: Setup, points: np.ndarray) -> np.ndarray:
    """The group whose point (``group_centroids``) is nearest (haversine) to each predicted (lat, lon): the probe's
    categorical reading for a group question."""
    assert setup.centroids is not None
    cents = setup.centroids[["latitude", "longitude"]].to_numpy(dtype=np.float64)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    distance = haversine_km(np.repeat(points, len(cents), axis=0), np.tile(cents, (len(points), 1)))
    return setup.centroids.index.to_numpy()[distance.reshape(len(points), len(cents)).argmin(axis=1)]


def result_folder(setup: Setup, stage: str, key: str) -> Path:
    """``results/<dataset>__<model>__<prompt>__<stage>-<question>__<key>``."""
    from worldprobe.probes.results import run_dir

    return run_dir(setup.workspace.results, setup.dataset, setup.model, setup.prompt,
                   f"{stage}-{setup.question.name}", key)  # fmt: skip


def check_format(request: ModelRequest, fmt: str) -> None:
    """Refuse an unknown ``--format``, or ``chat`` for a tokenizer without a chat template, before any work (this
    reads the tokenizer only, not the weights)."""
    if fmt != "chat":
        questions.resolve_format(None, fmt)
        return
    from transformers import AutoTokenizer

    from worldprobe.extract.models import OBJECT_PREFIX, describe_model, object_tokenizer

    if request.name.startswith(OBJECT_PREFIX):
        questions.resolve_format(object_tokenizer(request.name), fmt)
        return
    info = describe_model(request.name, **request.options)
    revision = request.revision
    tokenizer = AutoTokenizer.from_pretrained(info.folder, **({"revision": revision} if revision else {}))
    questions.resolve_format(tokenizer, fmt)


def prepare_for(request: ModelRequest, workspace: Workspace, dataset: str, prompt: str, question: str | None,
                fmt: str, **options: Any) -> Setup:  # fmt: skip
    """:func:`prepare` for a model request: its format checked first, its cache the one of its revision and dtype
    (``options``: ``layer``, ``steerable``, ``progress``)."""
    check_format(request, fmt)
    return prepare(workspace, dataset, request.name, prompt, question, revision=request.revision,
                   dtype=request.cache_dtype, **options)  # fmt: skip


def file_digest(path: str) -> str:
    """The sha256 of a user's input file (a steering vector), so a run key changes with its content."""
    from worldprobe.checksums import sha256_of

    file = Path(path)
    if not file.is_file():
        raise WorldprobeError("no such file", file=file, field="direction", hint="a .npy file of a vector")
    return sha256_of(file)


def base_columns(setup: Setup, rows: np.ndarray) -> pd.DataFrame:
    """Identity, truth and probe prediction of the asked rows: dataset, model, prompt, question, layer, entity_id,
    name, text, is_test, entity_type, the dataset's group columns, ``true_<target>``, ``pred_<target>``."""
    spec = get_spec(setup.dataset)
    keep = ["entity_id", "name", "text", "is_test", "entity_type",
            *[c for c in spec.group_columns if c in setup.entities.columns and c != "entity_type"]]  # fmt: skip
    frame = setup.entities.loc[rows, list(dict.fromkeys(keep))].reset_index(drop=True)
    for j, target in enumerate(setup.targets):
        frame[f"true_{target}"] = setup.y[rows, j]
        frame[f"pred_{target}"] = setup.pred[rows, j]
    if setup.question.kind == "group":
        frame["truth_group"] = setup.entities.loc[rows, setup.question.truth[0]].astype(object).to_numpy()
    ids = {"dataset": setup.dataset, "model": setup.model, "prompt": setup.prompt, "question": setup.question.name,
           "layer": setup.layer}  # fmt: skip
    for position, (name, value) in enumerate(ids.items()):
        frame.insert(position, name, value)
    return frame


def probe_record(setup: Setup) -> dict[str, Any]:
    """The probe's layer and how it was chosen, for a summary."""
    return {
        "selected_layer": setup.layer, "n_layers": setup.n_layers, "selection_criterion": setup.choice.criterion,
        "selection": {str(k): v for k, v in setup.choice.scores.items()}, "alpha": setup.probe.alpha_,
        "targets": setup.targets, "train_rows": int(setup.train.sum()),
        "cache": {"path": setup.workspace.relative(setup.cache.path),
                  "dataset_fingerprint": setup.cache.manifest.get("dataset_fingerprint"),
                  "entity_order_sha256": setup.cache.manifest.get("entity_order_sha256")},
    }  # fmt: skip
