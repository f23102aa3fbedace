"""What an evaluation scores on: the data, its task and limits, and this process's shard of it.

``EvalData`` holds a COCO-style dataset (detection) or a labelled / unlabelled image set (classification,
``none``), or ready ``(inputs, labels)`` batches; under ``torchrun`` its :class:`Shard` is this rank's part
(items ``rank::world``) and :meth:`Shard.gather` merges every rank's predictions.

Example:
    >>> data = EvalData("classification", batches=[(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))])
    >>> data.metric, data.count(), EvalData("none", batches=[(torch.zeros(2, 3), None)]).metric
    ('top1', 4, None)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fx2trt_pipeline.errors import ConfigError

TASKS = ("detection", "classification", "none")
#: Images compared output by output between backends.
PARITY_BATCH = 16
#: The primary metric of each task.
TASK_METRIC = {"detection": "mAP", "classification": "top1"}


@dataclass(frozen=True)
class Shard:
    """This process's part of the data: items ``rank::world`` (one process: ``Shard(0, 1)``)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Shard:
        """The shard of this process under an initialised ``torch.distributed`` group, else the whole set."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (collective: every rank must call it)."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out


@dataclass
class EvalData:
    """What runners are scored on.

    Attributes:
        task: ``detection`` (COCO mAP) | ``classification`` (top-1/top-5 when labelled, agreement with FP32
            always) | ``none`` (outputs compared only).
        dataset: ``ds[i] -> (image, label or image id)``: a COCO set (detection) or a labelled folder.
        batches: ``(inputs, labels or None)`` batches, instead of ``dataset`` (classification / none).
        input_name: the feed name of the model's single input.
        decode_fn: detector outputs -> (boxes, scores, classes) (detection only).
        max_images, batch_size: the first N items only; items per runner call.
        shard: this process's part (:meth:`Shard.current` under torchrun).
        output: which model output holds the class scores (classification / agreement): its index in output
            order or its name (MTCNN's RNet: 1, the face probabilities after the box regression).
    """

    task: str
    dataset: Any = None
    batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]] | None = None
    input_name: str = "images"
    decode_fn: Callable[[Any], Any] | None = None
    max_images: int | None = None
    batch_size: int = 50
    shard: Shard = field(default_factory=Shard)
    output: int | str = 0
    _local: list[tuple[torch.Tensor, torch.Tensor | None]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "detection" and (self.dataset is None or self.decode_fn is None):
            raise ConfigError(
                "Detection needs a COCO-style dataset and a decode_fn (outputs -> boxes, "
                "scores, classes); give [model] decode = 'package.module:function' or task 'none'."
            )

    @property
    def metric(self) -> str | None:
        """The primary metric, ``None`` when the data has no labels for one."""
        if self.task == "classification" and not self.labelled:
            return None
        return TASK_METRIC.get(self.task)

    @property
    def labelled(self) -> bool:
        """Whether the data carries labels (class indices or COCO boxes)."""
        if self.task == "detection":
            return True
        first = self._first_batch()
        return first is not None and first[1] is not None

    def count(self) -> int:
        """Items scored (all ranks together)."""
        if self.batches is not None:
            return min(sum(int(b[0].shape[0]) for b in self.batches), self.max_images or 1 << 62)
        return 0 if self.dataset is None else min(len(self.dataset), self.max_images or 1 << 62)

    def indices(self) -> list[int]:
        """Dataset indices of this rank's shard."""
        return list(range(self.count()))[self.shard.rank :: self.shard.world]

    def _first_batch(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        if self.batches is not None:
            return self.batches[0] if len(self.batches) else None
        if self.dataset is None or len(self.dataset) == 0:
            return None
        return _collate([self.dataset[0]])

    def local_batches(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """This rank's batches (classification / none), loaded once."""
        if self._local is None:
            if self.batches is not None:
                self._local = _limit(self.batches, self.max_images)[self.shard.rank :: self.shard.world]
            else:
                idx = self.indices()
                self._local = [
                    _collate([self.dataset[i] for i in idx[s : s + self.batch_size]])
                    for s in range(0, len(idx), self.batch_size)
                ]
        return self._local

    def parity_feeds(self, fallback: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The first :data:`PARITY_BATCH` images (same on every rank), for output comparisons."""
        if self.dataset is not None:
            first = _collate([self.dataset[i] for i in range(min(PARITY_BATCH, len(self.dataset)))])[0]
        elif self.batches:
            first = torch.cat([b[0] for b in self.batches[:PARITY_BATCH]]).float()
        elif fallback is not None:
            first = fallback
        else:
            raise ConfigError("No evaluation data to compare outputs on.")
        return {self.input_name: first[:PARITY_BATCH]}


class ItemSubset:
    """Items ``indices`` of a dataset, as a dataset (COCO ground truth, image ids and box transforms follow)."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        if hasattr(dataset, "transform"):
            self.transform = lambda i: dataset.transform(self.indices[i])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]

    @property
    def coco(self) -> Any:
        """The ground truth of the whole dataset (scored on this subset's image ids)."""
        return self.dataset.coco

    @property
    def image_ids(self) -> list[int] | None:
        """COCO image ids of the items, when the dataset lists them."""
        ids = getattr(self.dataset, "image_ids", None)
        return None if ids is None else [ids[i] for i in self.indices]


def split_alternate(data: EvalData) -> tuple[EvalData, EvalData]:
    """``(choose, report)``: the even-numbered and the odd-numbered items of ``data`` (its first ``count()``).

    An automatic choice (calibrator search, mixed precision) is made on ``choose`` and the result is reported
    on ``report``, so the reported numbers are not those the choice was fitted to. Alternate items keep the
    class balance of folders listed class by class.

    Example:
        >>> data = EvalData("classification", batches=[(torch.arange(5.0)[:, None], torch.arange(5))])
        >>> choose, report = split_alternate(data)
        >>> choose.local_batches()[0][1].tolist(), report.local_batches()[0][1].tolist()
        ([0, 2, 4], [1, 3])
    """
    n = data.count()
    halves = (list(range(0, n, 2)), list(range(1, n, 2)))
    if data.dataset is not None:
        return tuple(  # type: ignore[return-value]
            dataclasses.replace(data, dataset=ItemSubset(data.dataset, idx), max_images=None) for idx in halves
        )
    items = _limit(data.batches or [], data.max_images)
    x = torch.cat([b[0] for b in items])
    y = None if any(b[1] is None for b in items) else torch.cat([b[1] for b in items])
    out = []
    for idx in halves:
        xs, ys = x[idx], None if y is None else y[idx]
        step = max(1, data.batch_size)
        batches = [(xs[s : s + step], None if ys is None else ys[s : s + step]) for s in range(0, len(idx), step)]
        out.append(dataclasses.replace(data, batches=batches, max_images=None))
    return out[0], out[1]


def _collate(items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(items[0], (tuple, list)):
        return (
            torch.stack([torch.as_tensor(it[0]) for it in items]).float(),
            torch.tensor([int(it[1]) for it in items]),
        )
    return torch.stack([torch.as_tensor(it) for it in items]).float(), None


def _limit(batches: Sequence[Any], max_images: int | None) -> list[Any]:
    if max_images is None:
        return list(batches)
    out, left = [], int(max_images)
    for x, y in batches:
        if left <= 0:
            break
        out.append((x[:left], None if y is None else y[:left]))
        left -= int(x.shape[0])
    return out


__all__ = ["EvalData", "ItemSubset", "PARITY_BATCH", "Shard", "TASKS", "TASK_METRIC", "split_alternate"]
