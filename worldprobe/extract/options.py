"""How a stage asks for a model and how an extraction feeds it, declared once: :class:`ModelRequest` (a model and its
loading options) and :class:`Batching`, each checking its fields by its rule table (:data:`MODEL_RULES`,
:data:`BATCHING_RULES`), which the CLI and a study's ``[extract]`` section read too. No torch import here: a study
file is checked without loading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worldprobe.checks import COUNT, FLAG, NAME, SEED_MAX, Rule, checked_fields
from worldprobe.config import DEFAULT_MODEL, DEFAULT_SEED
from worldprobe.errors import WorldprobeError

QUANTIZATIONS = (None, "4bit", "8bit")
DEFAULT_FLUSH_ROWS = 2048
Shard = tuple[int, int]
"""(index, count): shard ``index`` (0-based) of ``count``; (0, 1) is the whole cache written by one writer."""


def check_shard(shard: Shard | None) -> Shard:
    """``shard`` as (index, count), (0, 1) for None; refuses a count below 1 or an index outside 0..count-1."""
    index, count = shard or (0, 1)
    if int(count) != count or count < 1 or int(index) != index or not 0 <= index < count:
        raise WorldprobeError(f"shard {shard} is not (index, count) with 0 <= index < count", field="shard")
    return int(index), int(count)


def _dtypes() -> tuple[str, ...]:
    from worldprobe.devices import DTYPE_CHOICES

    return DTYPE_CHOICES


MODEL_RULES: dict[str, Rule] = {
    "name": NAME, "dtype": Rule(str, choices=_dtypes, noun="dtype", optional=False), "device": NAME,
    "quantization": Rule(str, choices=QUANTIZATIONS[1:], noun="quantization"), "gguf_file": Rule(str),
    "revision": Rule(str), "seed": Rule(int, minimum=0, maximum=SEED_MAX), "max_memory": Rule(dict),
}  # fmt: skip
"""The rules of :class:`ModelRequest`'s fields (the CLI's ``--dtype``, ``--quantization`` ... and a study's
``[extract]`` keys of the same names are checked by them)."""


@dataclass(frozen=True)
class ModelRequest:
    """One model as a stage asks for it: the name it is taken by and its loading options, checked once when made and
    passed whole (as HF datasets passes a ``DownloadConfig``). Every stage that runs or reads a model takes one as its
    ``model`` argument (a plain name or a loaded model object stands for a request with the default options):
    ``run_extraction("world_place", ModelRequest("gemma-3-270m", dtype="float32"))``; a loaded Hugging Face model
    goes by the name :func:`~worldprobe.extract.models.register_model` gives it (``register_model(model, tokenizer)``).

    ``dtype``: auto, fast, float32, bfloat16, float16 (resolved for ``device`` when loading); ``quantization``:
    4bit or 8bit (bitsandbytes); ``gguf_file``: a GGUF inside a folder; ``revision``: a hub branch, tag or commit;
    ``seed``: a random-init twin's weights (None: the stage's ``seed``); ``max_memory``: device_map's bound per
    device. ``options`` is what :func:`load_model` takes and what a run's ``settings.model_options`` records."""

    name: str = DEFAULT_MODEL
    dtype: str = "auto"
    device: str = "auto"
    quantization: str | None = None
    gguf_file: str | None = None
    revision: str | None = None
    seed: int | None = None
    max_memory: dict[Any, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        checked_fields(self, MODEL_RULES)

    @property
    def options(self) -> dict[str, Any]:
        """The options :func:`load_model` takes (``revision`` and ``max_memory`` only when given)."""
        out = {"dtype": self.dtype, "device": self.device, "quantization": self.quantization,
               "gguf_file": self.gguf_file, "seed": DEFAULT_SEED if self.seed is None else self.seed}  # fmt: skip
        given = {"revision": self.revision, "max_memory": self.max_memory}
        return {**out, **{k: v for k, v in given.items() if v is not None}}

    @property
    def cache_dtype(self) -> str:
        """The dtype its activation cache was extracted in (``auto``/``fast`` resolved for ``device`` here)."""
        from worldprobe.devices import cache_dtype

        return cache_dtype(self.dtype, self.device)


BATCHING_RULES: dict[str, Rule] = {
    "batch_size": COUNT, "padding_side": Rule(str, choices=("left", "right"), optional=False, noun="padding side"),
    "flush_rows": Rule(int, minimum=1, optional=False), "share_prefix": FLAG,
}  # fmt: skip
"""The rules of :class:`Batching`'s fields (the CLI's and a study's options of the same names read them)."""


@dataclass(frozen=True)
class Batching:
    """How an extraction feeds the model: entities per forward pass (None: chosen from the model's size and the
    device), the side padding goes on, rows written between ledger commits (how much a killed run loses), and
    ``shard=(i, k)``: compute only shard i (0-based) of k, its contiguous share of the length-sorted batches, into the
    same cache files, which k processes can write at once (the shard that finishes last completes the cache; every
    shard must use the same ``batch_size``: the first writer's is kept). With ``share_prefix`` the tokens every row
    starts with before its entity (the BOS, a prompt's fixed words) run once (:mod:`worldprobe.extract.prefix`; the
    manifest's ``shared_prefix_tokens`` says how many)."""

    batch_size: int | None = None
    padding_side: str = "right"
    flush_rows: int = DEFAULT_FLUSH_ROWS
    shard: Shard | None = None
    share_prefix: bool = True

    def __post_init__(self) -> None:
        checked_fields(self, BATCHING_RULES)
        if self.shard is not None:
            object.__setattr__(self, "shard", check_shard(self.shard))
