"""Training and evaluation batches from either of two sources, through one interface: a split held
in memory (`ExampleSet`) or a prepared split's parquet shards read as a stream.

The training loop (`model.train`) asks a source for one epoch's batches and for a split's
evaluation chunks; each comes as `(examples, rows)`, the rows of an example set that form the
batch, so the in-memory source hands out index arrays into its split without copying it.

Streaming (`ShardSource`, for `sainet train --prepared`): memory stays bounded by the shuffle
buffer and one parquet record batch, whatever the size of the split.
* The unit of reading is a parquet row group (the engines write 65,536 rows per group), read in
  record batches. Each epoch shuffles the order of all row groups with a generator seeded by
  (seed, epoch), then a bounded shuffle buffer (`shuffle_buffer` examples) mixes rows across
  groups: once the buffer is full it is permuted and half of it is emitted.
* Several processes (torchrun): the epoch's row groups, taken end to end, are cut into W equal
  contiguous ranges of rows, and rank r reads the r-th (a whole number of groups but for the two at
  its ends, which it reads in part). The shares then differ by at most one row, whatever the number
  of groups (even fewer than ranks), so every rank takes the same number of optimizer steps, as
  DDP needs (it reduces gradients at each); an epoch has as many steps as the smallest share fills.
* Evaluation reads the shards in file order, each rank its range, in chunks of exactly the
  evaluation batch size; in one process these are the very batches of the in-memory path, and
  rank 0 gathering the ranks' predictions in rank order has them in file order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from model.data.examples import ExampleSet, PreparedData, _examples_from_table, split_shards
from model.data.logs import SPLITS
from model.data.schema import FeatureSchema, Vocabulary

BatchRows = tuple[ExampleSet, np.ndarray | slice]   # a batch: these rows of this example set
READ_ROWS = 16_384           # rows per parquet record batch
DEFAULT_SHUFFLE_BUFFER = 100_000


def concat_examples(parts: list[ExampleSet]) -> ExampleSet:
    if len(parts) == 1:
        return parts[0]
    return ExampleSet(**{name: (None if value is None else np.concatenate([getattr(p, name) for p in parts]))
                         for name, value in parts[0].__dict__.items()})


def rebatch(chunks: Iterable[ExampleSet], batch_size: int) -> Iterator[ExampleSet]:
    """The rows of `chunks`, in order, cut into example sets of exactly `batch_size` (the last one shorter)."""
    pending, held = [], 0
    for chunk in chunks:
        if not len(chunk):
            continue
        pending.append(chunk)
        held += len(chunk)
        if held < batch_size:
            continue
        merged = concat_examples(pending)
        full = held - held % batch_size
        for start in range(0, full, batch_size):
            yield merged.subset(slice(start, start + batch_size))
        pending = [merged.subset(slice(full, None))] if full < held else []
        held -= full
    if held:
        yield concat_examples(pending)


def shuffle_buffer(chunks: Iterable[ExampleSet], capacity: int, rng: np.random.Generator) -> Iterator[ExampleSet]:
    """The rows of `chunks` in a locally shuffled order, holding at most about `capacity` rows (plus
    one chunk): whenever the buffer is full, it is permuted and its first half emitted."""
    if capacity <= 0:
        yield from chunks
        return
    pool, held = [], 0
    for chunk in chunks:
        pool.append(chunk)
        held += len(chunk)
        if held >= capacity:
            merged = concat_examples(pool)
            order = rng.permutation(held)
            keep = capacity // 2
            yield merged.subset(order[keep:])
            pool, held = [merged.subset(order[:keep])], keep
    if held:
        merged = concat_examples(pool)
        yield merged.subset(rng.permutation(held))


@dataclass(frozen=True)
class RowGroup:
    path: Path
    index: int
    rows: int


@dataclass
class StreamedData:
    """A prepared folder (`sainet data prepare`) opened for streaming: the schema, vocabularies and
    item table in memory, the splits as row groups of their parquet shards."""

    schema: FeatureSchema
    vocabularies: dict[str, Vocabulary]
    split_groups: dict[str, list[RowGroup]]
    item_feature_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    data_options: dict | None = None       # as prepared.json records them

    @classmethod
    def open(cls, folder: Path) -> StreamedData:
        folder = Path(folder)
        if not (folder / "schema.json").exists():
            raise FileNotFoundError(f"{folder} has no schema.json; is it a `sainet data prepare` folder?")
        schema = FeatureSchema.load(folder / "schema.json")
        vocabularies = {p.stem: Vocabulary.load(p) for p in sorted((folder / "vocab").glob("*.json"))}
        groups = {}
        for name in SPLITS:
            shards = split_shards(folder / f"{name}.parquet")
            if not shards:
                raise FileNotFoundError(f"{folder / name}.parquet holds no parquet shards")
            groups[name] = [RowGroup(path, i, metadata.row_group(i).num_rows)
                            for path in shards for metadata in [pq.ParquetFile(path).metadata]
                            for i in range(metadata.num_row_groups)]
        manifest = folder / "prepared.json"
        recorded = json.loads(manifest.read_text()).get("data_options") if manifest.exists() else None
        return cls(schema, vocabularies, groups, pd.read_parquet(folder / "item_features.parquet"), recorded)

    def split_rows(self, split: str) -> int:
        return sum(group.rows for group in self.split_groups[split])


class MemorySource:
    """Batches of splits held in memory. The epoch orders come from one generator seeded once (after
    the optional training subsample), so they are those `train_model` has always drawn."""

    def __init__(self, data: PreparedData, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 max_train_examples: int | None = None):
        self.splits, self.batch_size, self.rank, self.world_size = data.splits, batch_size, rank, world_size
        self.rng = np.random.default_rng(seed)
        train = data.splits["train"]
        if max_train_examples and len(train) > max_train_examples:
            train = train.subset(np.sort(self.rng.choice(len(train), max_train_examples, replace=False)))
        self.train = train
        self._epoch_start = self.rng.bit_generator.state

    @property
    def train_examples(self) -> int:
        return len(self.train)

    def _share(self, n: int) -> list[int]:
        return [len(range(r, n, self.world_size)) for r in range(self.world_size)]

    def steps_in_epoch(self, epoch: int) -> int:
        return min(math.ceil(rows / self.batch_size) for rows in self._share(len(self.train)))

    def train_batches(self, epoch: int, start_batch: int = 0) -> Iterator[BatchRows]:
        self._epoch_start = self.rng.bit_generator.state
        order = self.rng.permutation(len(self.train))[self.rank::self.world_size]
        steps = self.steps_in_epoch(epoch)
        return ((self.train, order[i * self.batch_size:(i + 1) * self.batch_size])
                for i in range(start_batch, steps))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[BatchRows]:
        examples = self.splits[split]
        if self.world_size == 1:
            return ((examples, slice(s, s + batch_size)) for s in range(0, len(examples), batch_size))
        rows = np.arange(self.rank, len(examples), self.world_size)
        return ((examples, rows[s:s + batch_size]) for s in range(0, len(rows), batch_size))

    def state_dict(self) -> dict:
        """What replays the current epoch: the generator as it was when the epoch drew its order."""
        return {"rng": self._epoch_start}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class ShardSource:
    """Batches streamed from a prepared folder's shards (see the module docstring)."""

    def __init__(self, data: StreamedData, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle_buffer_rows: int = DEFAULT_SHUFFLE_BUFFER, read_rows: int = READ_ROWS):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer_rows, self.read_rows = shuffle_buffer_rows, read_rows

    @property
    def train_examples(self) -> int:
        return self.data.split_rows("train")

    def _epoch_groups(self, epoch: int) -> list[RowGroup]:
        groups = self.data.split_groups["train"]
        order = np.random.default_rng([self.seed, epoch]).permutation(len(groups))   # the same on every rank
        return [groups[i] for i in order]

    def _rank_range(self, groups: list[RowGroup], rank: int) -> tuple[int, int]:
        """Rank r's rows of `groups` taken end to end: the r-th of W equal contiguous ranges."""
        total = sum(group.rows for group in groups)
        return total * rank // self.world_size, total * (rank + 1) // self.world_size

    def steps_in_epoch(self, epoch: int) -> int:
        groups = self._epoch_groups(epoch)
        return min(math.ceil((end - start) / self.batch_size)
                   for start, end in (self._rank_range(groups, r) for r in range(self.world_size)))

    def _read(self, groups: list[RowGroup]) -> Iterator[ExampleSet]:
        """This rank's rows of `groups`, in their order."""
        start, end = self._rank_range(groups, self.rank)
        group_start = 0
        for group in groups:
            group_end = group_start + group.rows
            if group_end > start and group_start < end:
                offset = group_start
                for batch in pq.ParquetFile(group.path).iter_batches(batch_size=self.read_rows,
                                                                     row_groups=[group.index]):
                    first, last = max(start - offset, 0), min(end - offset, batch.num_rows)
                    if first < last:
                        yield _examples_from_table(pa.Table.from_batches([batch.slice(first, last - first)]),
                                                   self.data.schema)
                    offset += batch.num_rows
            group_start = group_end
            if group_start >= end:
                break

    def train_batches(self, epoch: int, start_batch: int = 0) -> Iterator[BatchRows]:
        """One epoch's batches; resuming at `start_batch` replays the epoch's (seeded) stream up to it
        without training on it."""
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        stream = rebatch(shuffle_buffer(self._read(self._epoch_groups(epoch)), self.shuffle_buffer_rows, rng),
                         self.batch_size)
        steps = self.steps_in_epoch(epoch)
        for index, examples in enumerate(stream):
            if index >= steps:
                break
            if index >= start_batch:
                yield examples, slice(None)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[BatchRows]:
        return ((examples, slice(None)) for examples in rebatch(self._read(self.data.split_groups[split]), batch_size))

    def state_dict(self) -> dict:
        return {}       # an epoch's stream is a function of (seed, epoch, rank)

    def load_state_dict(self, state: dict) -> None:
        pass

