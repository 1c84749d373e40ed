"""Out-of-core preparation: history building as one declarative SQL query, run by an existing engine.

`sainet data prepare` runs the same query on DuckDB (embedded, the default: it spills to disk
under `memory_limit`) or on Spark (`--engine spark`, for logs that need a cluster). Both read the
canonical log (see `model.data.logs`) from parquet shards (or, DuckDB only, CSV) and write the
prepared splits as parquet shards. The rules are those of `model.data.examples`, exactly, and the
tests hold the two paths to the same examples:

* total order: user (in order of first appearance in the log), then time, then the log's own order
  (file name order, then row order within a file);
* splits: `given`, `time` (global time order, first 80% train, next 10% valid), `leave-last-out`
  (per user, its last distinct time tests, the one before validates), `random` (the same seeded
  numpy permutation of the total order as the in-memory path);
* vocabularies fit on the training split only, values in order of first appearance, index 0 padding,
  1 out-of-vocabulary;
* history of an example: the user's N most recent behaviours strictly before it. Each row gets
  `_index`, the number of behaviours before it in the total order (the behaviours of the users
  before its own, plus a running count within its user), so a behaviour's `_index` is its global
  index; the window `list(item) OVER
  (PARTITION BY user ORDER BY _index ROWS BETWEEN N-1 PRECEDING AND CURRENT ROW)` over the
  behaviours gives, per behaviour, the history of every example whose most recent earlier behaviour
  it is, and each example carries that behaviour's index as its history key (non-behaviour rows,
  such as sampled negatives, share their positive's history and never enter one); left-padded with
  0 so that the most recent behaviour sits last;
* numeric features (fractional float columns, or declared): statistics of the training split
  (clip bounds: PERCENTILE_DISC for standard scaling, MIN and MAX for min-max; mean and std of the
  clipped values), then the SQL spelling of
  `sainet.numeric.NumericFeature.transform` (`numeric_sql`), written as float32.

Layout of a prepared folder (streamable: shards of examples, histories as fixed-width list columns):

    prepared.json                 format, engine, example counts, shards, the data options
    schema.json, vocab/*.json     the feature schema and vocabularies (as the in-memory path)
    item_features.parquet         raw item id -> raw item-side features, from the training split
    train.parquet/part-NNNNN.parquet, valid.parquet/..., test.parquet/...
        columns user_id, timestamp, item, scenario, label, hist_items [N], hist_scenarios [N],
        one index column per feature, one float32 column per numeric feature, oracle_prob
        (synthetic); rows in the total order above
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model.data.examples import SPLIT_FRACTIONS
from model.data.logs import RESERVED_COLUMNS, SPLITS, log_files
from model.data.schema import (
    OOV_INDEX,
    CategoricalFeature,
    FeatureSchema,
    NumericColumn,
    NumericFeature,
    Vocabulary,
)
from sainet.contract import FIRST_KNOWN_INDEX, MISSING_VALUE
from sainet.numeric import CLIP_QUANTILES

ENGINES = ("duckdb", "spark")
PREPARED_FORMAT = "sainet-prepared/1"
SHARD_ROWS = 1_000_000
ROW_GROUP_ROWS = 65_536
FILE_ORDER_SHIFT = 1 << 40       # log order = file index * 2^40 + row index within the file
# The prepared shards: histories are small integers that LZ4 packs as well as dictionary pages do
# (about 19 MiB per million examples at N = 50), and both write and read faster without them.
SHARD_WRITE_OPTIONS = {"compression": "lz4", "use_dictionary": False}


@dataclass(frozen=True)
class EngineOptions:
    engine: str = "duckdb"
    memory_limit: str | None = None     # DuckDB `memory_limit`, e.g. "4GB" (it spills beyond it)
    temp_dir: str | None = None         # where the engines spill and keep their working tables
    threads: int | None = None          # DuckDB threads (default: all cores)
    spark_master: str | None = None     # e.g. local[2], spark://host:7077; default: spark-submit's
    shard_rows: int = SHARD_ROWS        # examples per output shard (DuckDB; Spark: one per partition)


def engine_work_dir(engine: EngineOptions, prefix: str) -> Path:
    """A fresh working folder under `temp_dir` (created when absent, as a spill folder usually is)."""
    if engine.temp_dir:
        Path(engine.temp_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=engine.temp_dir))


# --------------------------------------------------------------------------- the two SQL dialects


class _Dialect:
    """The few spellings in which DuckDB and Spark SQL differ; everything else is one query."""

    def q(self, name: str) -> str:
        raise NotImplementedError

    def behaviours(self, value: str, window: str) -> str:
        """The behaviours' `value`s in the window frame, oldest first, as a list."""
        raise NotImplementedError

    def left_pad(self, values: str, width: int) -> str:
        raise NotImplementedError

    def finite_or_null(self, value: str) -> str:
        """A DOUBLE that is NULL unless finite (NaN and infinities are missing values)."""
        raise NotImplementedError

    def quantile(self, value: str, q: float) -> str:
        """The order statistic of `sainet.numeric.QUANTILE_METHOD` (SQL's PERCENTILE_DISC)."""
        raise NotImplementedError

    int_list = ""


class _DuckDBDialect(_Dialect):
    int_list = "INTEGER[]"

    def q(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def behaviours(self, value: str, window: str) -> str:
        return (f"COALESCE(list({value} ORDER BY _index) FILTER (WHERE is_behaviour) OVER {window}, "
                f"[]::BIGINT[])")

    def left_pad(self, values: str, width: int) -> str:
        return f"list_reverse(list_resize(list_reverse({values}), {width}, 0))"

    def finite_or_null(self, value: str) -> str:
        return f"CASE WHEN isfinite({value}) THEN {value} END"

    def quantile(self, value: str, q: float) -> str:
        return f"quantile_disc({value}, {q!r})"


class _SparkDialect(_Dialect):
    int_list = "ARRAY<INT>"

    def q(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def behaviours(self, value: str, window: str) -> str:
        # collect_list skips the NULLs of non-behaviours; sorting on the behaviours' index makes the
        # order explicit rather than an accident of the frame's evaluation.
        return (f"transform(array_sort(collect_list(CASE WHEN is_behaviour THEN "
                f"named_struct('k', _index, 'v', {value}) END) OVER {window}), s -> s.v)")

    def left_pad(self, values: str, width: int) -> str:
        return f"concat(array_repeat(CAST(0 AS BIGINT), {width} - size({values})), {values})"

    def finite_or_null(self, value: str) -> str:
        return (f"CASE WHEN NOT isnan({value}) AND abs({value}) < CAST('Infinity' AS DOUBLE) "
                f"THEN {value} END")

    def quantile(self, value: str, q: float) -> str:
        return f"percentile_disc({q!r}) WITHIN GROUP (ORDER BY {value})"


def _raw_string(d: _Dialect, column: str, kind: str) -> str:
    """A raw column as the in-memory path's strings (`as_raw_strings`): floats as integers."""
    col = d.q(column)
    if kind == "float":
        return f"CAST(CAST({col} AS BIGINT) AS STRING)"
    if kind == "bool":
        return f"CASE WHEN {col} THEN 'True' WHEN NOT {col} THEN 'False' END"
    return f"CAST({col} AS STRING)"


def _double(value: float) -> str:
    """An exact DOUBLE literal (a bare 0.1 would be a DECIMAL in DuckDB)."""
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def numeric_sql(d: _Dialect, value: str, feature: NumericFeature) -> str:
    """`NumericFeature.transform` in SQL, in the same float64 operations, then float32."""
    mean = _double(feature.mean)
    clipped = f"LEAST(GREATEST(COALESCE({value}, {mean}), {_double(feature.low)}), {_double(feature.high)})"
    return f"CAST(({clipped} - {_double(feature.offset)}) / {_double(feature.scale)} AS FLOAT)"


def fractional_sql(d: _Dialect, columns: list[str]) -> str:
    """Per float column: 1 if it holds a finite non-integer value (a measurement, not an id)."""
    checks = ", ".join(f"MAX(CASE WHEN {d.finite_or_null(d.q(c))} % 1 <> 0 THEN 1 ELSE 0 END)" for c in columns)
    return f"SELECT {checks} FROM raw"


def canonical_sql(d: _Dialect, kinds: dict[str, str], features: list[str], order_expr: str,
                  numeric: list[str] = ()) -> str:
    """The canonical log with normalised types (validation reads its NULLs) and its log order;
    numeric columns as DOUBLE, NULL where missing or not finite."""
    columns = [f"{_raw_string(d, c, kinds[c])} AS {c}" for c in ("user_id", "item_id", "scenario")]
    columns += ["TRY_CAST(timestamp AS DOUBLE) AS timestamp", "TRY_CAST(label AS DOUBLE) AS label"]
    columns.append("CAST(is_behaviour AS BOOLEAN) AS is_behaviour" if "is_behaviour" in kinds
                   else "TRY_CAST(label AS DOUBLE) = 1 AS is_behaviour")
    if "split" in kinds:
        columns.append("CAST(split AS STRING) AS split")
    if "oracle_prob" in kinds:
        columns.append("CAST(oracle_prob AS FLOAT) AS oracle_prob")
    for name in features:
        columns.append(f"COALESCE({_raw_string(d, name, kinds[name])}, '{MISSING_VALUE}') AS {d.q(name)}")
    for name in numeric:
        columns.append(f"{d.finite_or_null(f'TRY_CAST({d.q(name)} AS DOUBLE)')} AS {d.q(name)}")
    columns.append(f"{order_expr} AS _lo")
    return "SELECT " + ", ".join(columns) + " FROM raw"


def validation_sql(has_split: bool) -> str:
    split_check = (f"SUM(CASE WHEN split IS NULL OR split NOT IN {tuple(SPLITS)} THEN 1 ELSE 0 END)"
                   if has_split else "0")
    return ("SELECT COUNT(*), "
            "SUM(CASE WHEN user_id IS NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN item_id IS NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN scenario IS NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN timestamp IS NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN label IS NULL OR label NOT IN (0, 1) THEN 1 ELSE 0 END), "
            f"{split_check} FROM canon")


def distinct_per_sql(d: _Dialect, features: list[str], key: str) -> str:
    # a missing value (NULL, for numeric columns) counts as one value, as pandas' nunique(dropna=False)
    counts = ", ".join(f"COUNT(DISTINCT {d.q(f)}) + MAX(CASE WHEN {d.q(f)} IS NULL THEN 1 ELSE 0 END) AS n{i}"
                       for i, f in enumerate(features))
    maxima = ", ".join(f"MAX(n{i})" for i in range(len(features)))
    return f"SELECT {maxima} FROM (SELECT {counts} FROM canon GROUP BY {key}) t"


def split_cuts(n: int) -> tuple[int, int]:
    """The first valid and the first test rank of the time split (`SPLIT_FRACTIONS`, as in memory)."""
    return (int(round(SPLIT_FRACTIONS[0] * n)), int(round((SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]) * n)))


def time_cut_keys_sql(cuts: tuple[int, int]) -> str:
    """The (timestamp, log order) keys of the rows at the time split's cut ranks: a sort of those two
    columns only, where numbering every row of the log by time would sort its whole width."""
    return (f"SELECT _t, timestamp, _lo FROM (SELECT timestamp, _lo, ROW_NUMBER() OVER (ORDER BY timestamp, _lo) - 1"
            f" AS _t FROM canon) r WHERE _t IN ({cuts[0]}, {cuts[1]}) ORDER BY _t")


def time_split_expression(keys: dict[int, tuple[float, int]], cuts: tuple[int, int]) -> str:
    """'train' before the first cut's key in (timestamp, log order), 'valid' before the second, else 'test'.
    A cut at the end of the log has no key: every row is before it."""
    def before(cut: int) -> str:
        if cut not in keys:
            return "TRUE"
        timestamp, lo = keys[cut]
        return f"(timestamp < {_double(timestamp)} OR (timestamp = {_double(timestamp)} AND _lo < {int(lo)}))"
    return f"CASE WHEN {before(cuts[0])} THEN 'train' WHEN {before(cuts[1])} THEN 'valid' ELSE 'test' END"


_BEFORE = "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"


def ranked_sql(sql: str, order: list[str], sums: list[str] = ()) -> str:
    """`sql`'s rows with `_rank`, the number of rows before each in `order` (a unique key), and for
    each column c of `sums`, `_before_c`: the sum of c over those rows."""
    by = ", ".join(order)
    before = "".join(f", COALESCE(SUM({c}) OVER (ORDER BY {by} {_BEFORE}), 0) AS _before_{c}"
                     for c in sums)
    return f"SELECT *, ROW_NUMBER() OVER (ORDER BY {by}) - 1 AS _rank{before} FROM ({sql}) r"


# one row per user, ranked by the user's first appearance into table `offsets` (the runner's
# `materialize_ranked`), which `ordered_sql` reads
USER_TOTALS_SQL = ("SELECT user_id, MIN(_lo) AS _user_first, COUNT(*) AS user_rows, "
                   "SUM(CASE WHEN is_behaviour THEN 1 ELSE 0 END) AS user_behaviours "
                   "FROM canon GROUP BY user_id")
USER_ORDER = ["_user_first"]
USER_SUMS = ["user_rows", "user_behaviours"]


def ordered_sql(split_expression: str | None = None) -> str:
    """The log in its total order: `_row` numbers the rows, `_index` counts the behaviours before each,
    `_offset` is the `_index` of the user's first row; `split_expression`, when the split needs no
    other order, adds `_split`.

    Both numbers are a user's offset (the rows, or behaviours, of the users before them: table
    `offsets`, a running sum over one row per user) plus a count within the user (a window
    partitioned by user). No window runs over all the rows at once, so a cluster engine spreads the
    work over its partitions."""
    user_order = "PARTITION BY c.user_id ORDER BY c.timestamp, c._lo"
    split = f", {split_expression} AS _split" if split_expression else ""
    return f"""
SELECT c.*, CAST(o._before_user_behaviours AS BIGINT) AS _offset,
       CAST(o._before_user_rows + ROW_NUMBER() OVER ({user_order}) - 1 AS BIGINT) AS _row,
       CAST(o._before_user_behaviours
            + COALESCE(SUM(CASE WHEN c.is_behaviour THEN 1 ELSE 0 END) OVER ({user_order} {_BEFORE}), 0)
            AS BIGINT) AS _index{split}
FROM canon c JOIN offsets o ON c.user_id = o.user_id
"""


def split_sql(method: str) -> str:
    """The splits that need more than a row's own columns: a table `examples` from `ordered`."""
    if method == "leave-last-out":
        return ("SELECT *, CASE WHEN _t = 0 THEN 'test' WHEN _t = 1 THEN 'valid' ELSE 'train' END AS _split "
                "FROM (SELECT *, DENSE_RANK() OVER (PARTITION BY user_id ORDER BY timestamp DESC) - 1 AS _t "
                "FROM ordered) o")
    if method == "random":
        return "SELECT o.*, p._split FROM ordered o JOIN random_split p ON o._row = p._row"
    raise ValueError(f"unknown split method {method!r}")


def first_rows_sql(d: _Dialect, column: str) -> str:
    """A column's training-split values with the row of each one's first appearance, ranked (by
    `materialize_ranked` on `first_row`) into a vocabulary by `vocabulary_sql`."""
    return (f"SELECT {d.q(column)} AS value, MIN(_row) AS first_row FROM examples "
            f"WHERE _split = 'train' GROUP BY {d.q(column)}")


def vocabulary_sql(ranked_first_rows: str) -> str:
    """Training-split values in order of first appearance -> index (first known index 2)."""
    return f"SELECT value, _rank + {FIRST_KNOWN_INDEX} AS idx FROM {ranked_first_rows}"


def numeric_stats_sql(d: _Dialect, column: str, scaling: str = "standard") -> str:
    """Clip bounds of a numeric column on the training split (its finite values), as
    `NumericFeature.fit` takes them: quantiles (standard) or the extremes (min-max)."""
    value = d.q(column)
    bounds = (f"MIN({value}), MAX({value})" if scaling == "min-max"
              else f"{d.quantile(value, CLIP_QUANTILES[0])}, {d.quantile(value, CLIP_QUANTILES[1])}")
    return f"SELECT COUNT({value}), {bounds} FROM examples WHERE _split = 'train' AND {value} IS NOT NULL"


def numeric_moments_sql(d: _Dialect, column: str, low: float, high: float) -> str:
    clipped = f"LEAST(GREATEST({d.q(column)}, {_double(low)}), {_double(high)})"
    return (f"SELECT AVG({clipped}), STDDEV_POP({clipped}) FROM examples "
            f"WHERE _split = 'train' AND {d.q(column)} IS NOT NULL")


def keyed_examples_sql(d: _Dialect, features: list[str], vocab_tables: dict[str, str], has_oracle: bool,
                       numeric: list[NumericFeature] = ()) -> str:
    """Encodes every example and gives it the key of its history: the global index of the user's most
    recent behaviour strictly before it (-1 if none).

    Behaviours are numbered in the total order (user by first appearance, then time, then log order),
    so a user's behaviours hold consecutive indices from `_offset` (`ordered_sql`). An example with
    `_index` above its user's `_offset` has a behaviour of its own user just before it: its key is
    `_index - 1`; along the total order the keys never decrease."""
    joins, encoded = [], []
    for i, (column, output) in enumerate([("item_id", "item"), ("scenario", "scenario"),
                                          *[(f, f) for f in features]]):
        joins.append(f"LEFT JOIN {vocab_tables[column]} v{i} ON e.{d.q(column)} = v{i}.value")
        encoded.append(f"COALESCE(v{i}.idx, {OOV_INDEX}) AS {d.q(output)}")
    encoded += [f"{numeric_sql(d, f'e.{d.q(f.name)}', f)} AS {d.q(f.name)}" for f in numeric]
    oracle = ", e.oracle_prob" if has_oracle else ""
    return f"""
SELECT e._row, e._index, e._split, e.user_id, e.timestamp, e.is_behaviour, CAST(e.label AS FLOAT) AS label,
       CAST(CASE WHEN e._index > e._offset THEN e._index - 1 ELSE -1 END AS BIGINT) AS _hist_key,
       {", ".join(encoded)}{oracle}
FROM examples e {" ".join(joins)}
"""


def histories_sql(d: _Dialect, history_length: int) -> str:
    """The declarative heart of the preparation: per behaviour (key `_index`), the user's N most recent
    behaviours up to and including it, oldest first, left-padded with 0 to N. That is the history of
    every example whose key it is: the examples after it and before the user's next behaviour
    (sampled negatives share their positive's history this way)."""
    return f"""
SELECT _index AS _hist_key,
       CAST({d.left_pad(d.behaviours("item", "w"), history_length)} AS {d.int_list}) AS hist_items,
       CAST({d.left_pad(d.behaviours("scenario", "w"), history_length)} AS {d.int_list}) AS hist_scenarios
FROM prepared WHERE is_behaviour
WINDOW w AS (PARTITION BY user_id ORDER BY _index ROWS BETWEEN {history_length - 1} PRECEDING AND CURRENT ROW)
"""


def split_columns(features: list[str], has_oracle: bool) -> list[str]:
    return ["user_id", "timestamp", "item", "scenario", "label", *features, *(["oracle_prob"] if has_oracle else [])]


def split_examples_sql(d: _Dialect, split: str, features: list[str], has_oracle: bool) -> str:
    """A split's examples without their histories, in the total order, with their history keys."""
    columns = [d.q(c) for c in split_columns(features, has_oracle)]
    return f"SELECT {', '.join(columns)}, _hist_key FROM prepared WHERE _split = '{split}' ORDER BY _row"


def split_histories_sql(split: str) -> str:
    """The histories a split's examples use, by key (a stream in the order of those examples)."""
    return (f"SELECT h.* FROM histories h WHERE h._hist_key IN "
            f"(SELECT _hist_key FROM prepared WHERE _split = '{split}') ORDER BY h._hist_key")


def split_output_sql(d: _Dialect, split: str, features: list[str], history_length: int,
                     has_oracle: bool) -> str:
    """A split's examples with their histories attached by key, in one query (the Spark path)."""
    columns = [f"p.{d.q(c)}" for c in split_columns(features, has_oracle)]
    zeros = f"CAST(array_repeat(0, {history_length}) AS {d.int_list})"     # Spark SQL (the one caller)
    return (f"SELECT {', '.join(columns[:5])}, COALESCE(h.hist_items, {zeros}) AS hist_items, "
            f"COALESCE(h.hist_scenarios, {zeros}) AS hist_scenarios{''.join(', ' + c for c in columns[5:])} "
            f"FROM prepared p LEFT JOIN histories h ON p._hist_key = h._hist_key "
            f"WHERE p._split = '{split}' ORDER BY p._row")


def item_table_sql(d: _Dialect, item_features: list[str]) -> str:
    columns = ", ".join(["item_id", *[d.q(f) for f in item_features]])
    return (f"SELECT {columns} FROM (SELECT {columns}, _row, ROW_NUMBER() OVER (PARTITION BY item_id "
            f"ORDER BY _row) AS _k FROM examples WHERE _split = 'train') t WHERE _k = 1 ORDER BY _row")


# --------------------------------------------------------------------------- the engines


def _kind(type_name: str) -> str:
    name = type_name.upper()
    if name.startswith(("DOUBLE", "FLOAT", "REAL", "DECIMAL")):
        return "float"
    if name.startswith("BOOLEAN"):
        return "bool"
    return "other"


class _DuckDBEngine:
    dialect = _DuckDBDialect()

    def __init__(self, options: EngineOptions, work_dir: Path):
        import duckdb

        # A database file, so that the working tables live on disk under the buffer manager too.
        self.con = duckdb.connect(str(work_dir / "prepare.duckdb"))
        self.con.execute(f"SET temp_directory = '{work_dir / 'spill'}'")
        # Every order that matters is explicit (ORDER BY), which frees DuckDB's operators from keeping
        # the input order; only a CSV log's ingest keeps it (its rowid is the log order).
        self.con.execute("SET preserve_insertion_order = false")
        if options.memory_limit:
            self.con.execute(f"SET memory_limit = '{options.memory_limit}'")
        if options.threads:
            self.con.execute(f"SET threads = {int(options.threads)}")
        self.shard_rows = options.shard_rows
        self.work_dir = work_dir

    def open_log(self, files: list[Path]) -> tuple[dict[str, str], str]:
        """Registers the log as view/table `raw`; returns its column kinds and its log-order expression."""
        paths = [str(p) for p in files]
        if all(p.suffix == ".parquet" for p in files):
            self.con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet({paths!r}, "
                             f"union_by_name = true, filename = true, file_row_number = true)")
            order = f"(list_position({paths!r}, filename) - 1) * {FILE_ORDER_SHIFT} + file_row_number"
            hidden = {"filename", "file_row_number"}
        elif all(p.suffix in (".csv", ".tsv") for p in files):
            delim = "\\t" if files[0].suffix == ".tsv" else ","
            sniffed = self.con.execute(f"DESCRIBE SELECT * FROM read_csv({paths!r}, delim = e'{delim}', "
                                       f"union_by_name = true)").fetchall()
            types = {c[0]: "VARCHAR" for c in sniffed if c[0] in ("user_id", "item_id", "scenario")}
            # A table keeps the reader's order (insertion order is preserved): rowid is the log order.
            self.con.execute("SET preserve_insertion_order = true")
            self.con.execute(f"CREATE TABLE raw AS SELECT * FROM read_csv({paths!r}, delim = e'{delim}', "
                             f"union_by_name = true, types = {types!r})")
            self.con.execute("SET preserve_insertion_order = false")
            order, hidden = "rowid", set()
        else:
            raise ValueError(f"the log's files must be all parquet or all CSV/TSV: {paths}")
        described = self.con.execute("DESCRIBE SELECT * FROM raw").fetchall()
        return {c[0]: _kind(c[1]) for c in described if c[0] not in hidden}, order

    def materialize(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}")

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()

    def materialize_ranked(self, name: str, sql: str, order: list[str], sums: list[str] = ()) -> None:
        """Table `name`: `sql`'s rows with `ranked_sql`'s rank and running sums."""
        self.materialize(name, ranked_sql(sql, order, sums))

    def time_cut_keys(self, cuts: tuple[int, int]) -> dict[int, tuple[float, int]]:
        """The (timestamp, log order) key of the row at each of the time split's cut ranks."""
        return {int(t): (float(ts), int(lo)) for t, ts, lo in self.rows(time_cut_keys_sql(cuts))}

    def register_rows(self, name: str, rows: list[tuple], columns: list[str]) -> None:
        frame = pd.DataFrame(rows, columns=columns)
        self.con.register(f"{name}_frame", frame)
        self.materialize(name, f"SELECT * FROM {name}_frame")

    def register_parquet(self, name: str, path: Path) -> None:
        self.materialize(name, f"SELECT * FROM read_parquet('{path}')")

    def to_pandas(self, sql: str) -> pd.DataFrame:
        return self.con.execute(sql).df()

    def _reader(self, sql: str, batch_rows: int) -> pa.RecordBatchReader:
        relation = self.con.sql(sql)
        # a stream of record batches, never the whole result (to_arrow_reader: DuckDB >= 1.4)
        return (relation.to_arrow_reader(batch_rows) if hasattr(relation, "to_arrow_reader")
                else relation.fetch_arrow_reader(batch_rows))

    def write_split(self, split: str, features: list[str], has_oracle: bool, out_dir: Path,
                    history_length: int) -> None:
        """The split's examples in the total order, each with its history attached by key.

        DuckDB sorts both: the examples (narrow rows, streamed) and the histories they use (one per
        key, ascending like the examples' keys; written to a work file first). Attaching them here
        is a merge of the two sorted streams; sorting the wide rows (two N-lists each) by the total
        order in SQL instead cost most of the preparation's time."""
        out_dir.mkdir(parents=True)
        batch_rows = min(ROW_GROUP_ROWS, self.shard_rows)
        # the histories first, to a file: two open results at once would share the memory limit
        histories = self.work_dir / f"histories-{split}.parquet"
        self.con.execute("SET preserve_insertion_order = true")     # COPY keeps the ORDER BY's order
        try:
            self.con.execute(f"COPY ({split_histories_sql(split)}) TO '{histories}' (FORMAT parquet, COMPRESSION lz4)")
        finally:
            self.con.execute("SET preserve_insertion_order = false")
        examples = self._reader(split_examples_sql(self.dialect, split, features, has_oracle), batch_rows)
        stream = _HistoryStream(pq.ParquetFile(histories).iter_batches(batch_rows), history_length)
        self._write_merged(examples, stream, out_dir)
        histories.unlink()

    def _write_merged(self, examples: pa.RecordBatchReader, histories: _HistoryStream, out_dir: Path) -> None:
        writer, shard, room = None, 0, 0
        for batch in examples:
            table = histories.attach(pa.Table.from_batches([batch]))
            while table.num_rows:
                if room == 0:
                    if writer is not None:
                        writer.close()
                    writer = pq.ParquetWriter(out_dir / f"part-{shard:05d}.parquet", table.schema, **SHARD_WRITE_OPTIONS)
                    shard, room = shard + 1, self.shard_rows
                piece, table = table.slice(0, room), table.slice(room)
                writer.write_table(piece, row_group_size=ROW_GROUP_ROWS)
                room -= piece.num_rows
        if writer is None:      # an empty split still gets one shard, so its schema is on disk
            empty = histories.attach(pa.Table.from_batches([], examples.schema))
            pq.write_table(empty, out_dir / "part-00000.parquet", **SHARD_WRITE_OPTIONS)
        else:
            writer.close()

    def close(self) -> None:
        self.con.close()


class _HistoryStream:
    """The histories of one split as a stream in key order, and the merge that attaches them to the
    split's examples (whose keys never decrease; -1: no behaviour before, an all-padding history).
    It holds the histories from the current batch's first key on: about one batch of them."""

    def __init__(self, reader: Iterable[pa.RecordBatch], width: int):
        self.reader, self.width = iter(reader), width
        self.keys = np.zeros(0, np.int64)
        self.items = self.scenarios = np.zeros((0, width), np.int32)

    def _matrix(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        return np.asarray(pc.list_flatten(column).to_numpy(zero_copy_only=False), np.int32).reshape(-1, self.width)

    def _read_through(self, key: int) -> None:
        while not len(self.keys) or self.keys[-1] < key:
            batch = next(self.reader, None)
            if batch is None:
                raise RuntimeError(f"history key {key} is missing from the histories stream")
            keys = batch["_hist_key"].to_numpy(zero_copy_only=False)
            if len(keys) and ((len(self.keys) and keys[0] <= self.keys[-1]) or np.any(np.diff(keys) <= 0)):
                raise RuntimeError("the histories stream is not in ascending key order")
            self.keys = np.concatenate([self.keys, keys])
            self.items = np.concatenate([self.items, self._matrix(batch["hist_items"])])
            self.scenarios = np.concatenate([self.scenarios, self._matrix(batch["hist_scenarios"])])

    def attach(self, table: pa.Table) -> pa.Table:
        keys = table["_hist_key"].to_numpy().astype(np.int64, copy=False)
        n = len(keys)
        items, scenarios = np.zeros((n, self.width), np.int32), np.zeros((n, self.width), np.int32)
        known = keys >= 0
        if known.any():
            self._read_through(int(keys[known].max()))
            at = np.searchsorted(self.keys, keys[known])
            if not np.array_equal(self.keys[np.minimum(at, len(self.keys) - 1)], keys[known]):
                raise RuntimeError("the examples' history keys are not in the histories stream's order")
            items[known], scenarios[known] = self.items[at], self.scenarios[at]
            keep = int(np.searchsorted(self.keys, keys[known].max()))     # the next batch may share it
            self.keys, self.items, self.scenarios = self.keys[keep:], self.items[keep:], self.scenarios[keep:]
        columns = {name: table[name] for name in table.column_names if name != "_hist_key"}
        fixed = lambda m: pa.FixedSizeListArray.from_arrays(pa.array(m.ravel(), pa.int32()), self.width)
        names = list(columns)
        ordered = names[:5] + ["hist_items", "hist_scenarios"] + names[5:]
        columns |= {"hist_items": fixed(items), "hist_scenarios": fixed(scenarios)}
        return pa.table({name: columns[name] for name in ordered})


class _SparkEngine:
    dialect = _SparkDialect()

    def __init__(self, options: EngineOptions, work_dir: Path, spark=None):
        try:
            from pyspark.sql import SparkSession
        except ImportError as error:    # pragma: no cover - depends on the install
            raise ValueError("--engine spark needs pyspark: pip install 'sainet[spark]'") from error
        self.owns_session = spark is None
        if spark is None:
            builder = SparkSession.builder.appName("sainet-prepare")
            if options.spark_master:
                builder = builder.master(options.spark_master)
            spark = builder.getOrCreate()
        self.spark = spark
        self.cached, self.views = [], ["raw"]

    def open_log(self, files: list[Path]) -> tuple[dict[str, str], str]:
        from pyspark.sql import functions as F

        if not all(p.suffix == ".parquet" for p in files):
            raise ValueError("the spark engine reads parquet logs (convert a CSV log first, e.g. with "
                             "DuckDB's `COPY (FROM 'log.csv') TO 'log.parquet'`)")
        frame = self.spark.read.option("mergeSchema", "true").parquet(*[str(p) for p in files])
        kinds = {field.name: _kind(field.dataType.simpleString()) for field in frame.schema.fields}
        frame = frame.select("*", F.col("_metadata.file_path").alias("_file"),
                             F.col("_metadata.row_index").alias("_file_row"))
        # file_path is a URI of each file; in the order of the (name-sorted) files given
        uris = sorted(row[0] for row in frame.select("_file").distinct().collect())
        index = F.lit(0)
        for i, uri in enumerate(uris):
            index = F.when(F.col("_file") == uri, F.lit(i)).otherwise(index) if i else F.lit(0)
        frame = frame.withColumn("_file_index", index.cast("bigint"))
        frame.createOrReplaceTempView("raw")
        return kinds, f"_file_index * {FILE_ORDER_SHIFT} + _file_row"

    # the tables read more than once are cached (lazily, by their first reader); the rest stay views
    CACHED = ("canon", "examples", "prepared", "histories")

    def materialize(self, name: str, sql: str) -> None:
        from pyspark import StorageLevel

        frame = self.spark.sql(sql)
        if name in self.CACHED:
            frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
            self.cached.append(frame)
        frame.createOrReplaceTempView(name)
        self.views.append(name)

    def rows(self, sql: str) -> list[tuple]:
        return [tuple(row) for row in self.spark.sql(sql).collect()]

    def _ranked(self, frame, order: list[str], sums: list[str] = ()):
        """`ranked_sql`'s columns without a window over all the rows (which Spark runs in one
        partition): a distributed sort on `order` into range partitions, each partition's row count
        and sums (a few hundred rows, to the driver), then the rank and running sums within each
        partition plus those of the partitions before it. Returns the ranked frame and the sorted one
        it reads, persisted so that its partitions stay as they were counted (unpersist when done)."""
        from pyspark import StorageLevel
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        ordered = (frame.orderBy(*order).withColumn("_part", F.spark_partition_id())
                   .persist(StorageLevel.MEMORY_AND_DISK))
        totals = ordered.groupBy("_part").agg(F.count(F.lit(1)).alias("_n"),
                                              *[F.sum(c).alias(c) for c in sums])
        firsts, running = [], [0] * (1 + len(sums))
        for row in sorted(totals.collect(), key=lambda r: r["_part"]):
            firsts.append((int(row["_part"]), *running))
            running = [total + int(row[c] or 0) for total, c in zip(running, ["_n", *sums])]
        first_columns = ["_first_rank", *[f"_first_{c}" for c in sums]]
        schema = ", ".join(["_part INT", *[f"{c} BIGINT" for c in first_columns]])
        starts = F.broadcast(self.spark.createDataFrame(firsts, schema))
        within = Window.partitionBy("_part").orderBy(*order)
        before = within.rowsBetween(Window.unboundedPreceding, -1)
        ranked = ordered.join(starts, "_part").withColumn(
            "_rank", F.col("_first_rank") + F.row_number().over(within) - 1)
        for c in sums:
            ranked = ranked.withColumn(
                f"_before_{c}", F.col(f"_first_{c}") + F.coalesce(F.sum(c).over(before), F.lit(0)))
        return ranked.drop("_part", *first_columns), ordered

    def materialize_ranked(self, name: str, sql: str, order: list[str], sums: list[str] = ()) -> None:
        """View `name`: `sql`'s rows with `ranked_sql`'s rank and running sums (`_ranked`)."""
        ranked, ordered = self._ranked(self.spark.sql(sql), order, sums)
        self.cached.append(ordered)
        ranked.createOrReplaceTempView(name)
        self.views.append(name)

    def time_cut_keys(self, cuts: tuple[int, int]) -> dict[int, tuple[float, int]]:
        """As DuckDB's, on `_ranked`'s distributed rank of the two key columns."""
        from pyspark.sql import functions as F

        key = ["timestamp", "_lo"]
        ranked, ordered = self._ranked(self.spark.table("canon").select(*key), key)
        try:
            at_cuts = ranked.where(F.col("_rank").isin([int(cut) for cut in cuts]))
            rows = at_cuts.select("_rank", *key).collect()
            return {int(t): (float(ts), int(lo)) for t, ts, lo in rows}
        finally:
            ordered.unpersist()

    def register_rows(self, name: str, rows: list[tuple], columns: list[str]) -> None:
        schema = ", ".join(f"{c} {'STRING' if c == 'value' else 'BIGINT'}" for c in columns)
        self.spark.createDataFrame(rows, schema).createOrReplaceTempView(name)
        self.views.append(name)

    def register_parquet(self, name: str, path: Path) -> None:
        self.spark.read.parquet(str(path)).createOrReplaceTempView(name)
        self.views.append(name)

    def to_pandas(self, sql: str) -> pd.DataFrame:
        frame = self.spark.sql(sql)
        return pd.DataFrame([tuple(r) for r in frame.collect()], columns=frame.columns)

    def write_split(self, split: str, features: list[str], has_oracle: bool, out_dir: Path,
                    history_length: int) -> None:
        sql = split_output_sql(self.dialect, split, features, history_length, has_oracle)
        self.spark.sql(sql).write.mode("overwrite").parquet(str(out_dir))

    def close(self) -> None:
        for frame in self.cached:
            frame.unpersist()
        for name in self.views:
            self.spark.catalog.dropTempView(name)
        if self.owns_session:
            self.spark.stop()


# --------------------------------------------------------------------------- the preparation


def prepare_log_files(files: list[Path], out_dir: Path, *, dataset: str, history_length: int, split: str,
                      split_seed: int, features: list[CategoricalFeature] | None = None,
                      scenario_order: list[str] | None = None, engine: EngineOptions = EngineOptions(),
                      data_options: dict | None = None, spark=None, numeric: tuple[str, ...] = (),
                      numeric_scaling: dict[str, str] | None = None) -> dict:
    """Prepares a canonical log held in `files` into `out_dir` (see the module docstring's layout).

    `features` (with their sides) and `scenario_order` as an adapter declares them; None infers the
    features from the log's extra columns and sorts the training split's scenarios, as
    `validate_log` and `build_prepared_data` do; `numeric` names columns read as numbers (besides,
    when inferring, the fractional float columns), `numeric_scaling` a scaling other than standard
    (`sainet.numeric.SCALINGS`) for some of them. Returns the summary written to prepared.json.
    """
    if engine.engine not in ENGINES:
        raise ValueError(f"unknown engine {engine.engine!r}; choose from {ENGINES}")
    if history_length < 1:
        raise ValueError("history length must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        stale = out_dir / f"{name}.parquet"
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    work_dir = engine_work_dir(engine, "sainet-prepare-")
    runner = (_DuckDBEngine(engine, work_dir) if engine.engine == "duckdb"
              else _SparkEngine(engine, work_dir, spark))
    try:
        summary = _prepare(runner, files, out_dir, work_dir, dataset, history_length, split, split_seed,
                           features, scenario_order, tuple(numeric), dict(numeric_scaling or {}))
    finally:
        runner.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    summary = {"format": PREPARED_FORMAT, "engine": engine.engine, **summary, "data_options": data_options}
    (out_dir / "prepared.json").write_text(json.dumps(summary, indent=2))
    return summary


def _prepare(runner, files, out_dir: Path, work_dir: Path, dataset: str, history_length: int, split: str,
             split_seed: int, features: list[CategoricalFeature] | None,
             scenario_order: list[str] | None, declared_numeric: tuple[str, ...] = (),
             numeric_scaling: dict[str, str] | None = None) -> dict:
    d = runner.dialect
    kinds, order_expr = runner.open_log([Path(f) for f in files])
    missing = [c for c in ("user_id", "item_id", "scenario", "timestamp", "label") if c not in kinds]
    if missing:
        raise ValueError(f"interaction log lacks required column(s) {missing}; "
                         f"expected {['user_id', 'item_id', 'scenario', 'timestamp', 'label']}")
    if features is not None:
        undeclared = [f.name for f in features if f.name not in kinds]
        if undeclared:
            raise ValueError(f"declared feature {undeclared[0]!r} is not a column of the log")
    wrong = [c for c in declared_numeric if c not in kinds or c in RESERVED_COLUMNS]
    if wrong:
        raise ValueError(f"numeric column {wrong[0]!r} is not a feature column of the log")
    extra = [c for c in kinds if c not in RESERVED_COLUMNS]
    numeric_names = [c for c in extra if c in declared_numeric]
    if features is None:
        floats = [c for c in extra if kinds[c] == "float" and c not in declared_numeric]
        fractional = runner.rows(fractional_sql(d, floats))[0] if floats else []
        found = {c for c, flag in zip(floats, fractional) if flag}
        numeric_names = [c for c in extra if c in declared_numeric or c in found]
    names = ([f.name for f in features] if features is not None
             else [c for c in extra if c not in numeric_names])
    if set(names) & set(numeric_names):
        raise ValueError(f"columns {numeric_names} cannot be both categorical and numeric")
    runner.materialize("canon", canonical_sql(d, kinds, names, order_expr, numeric_names))

    n, *bad = runner.rows(validation_sql("split" in kinds))[0]
    problems = ["column 'user_id' has missing values", "column 'item_id' has missing values",
                "column 'scenario' has missing values", "column 'timestamp' must be numeric and complete",
                "column 'label' must hold only 0 and 1", f"column 'split' must hold only {SPLITS}"]
    for count, problem in zip(bad, problems):
        if count:
            raise ValueError(problem)
    if split == "given" and "split" not in kinds:
        raise ValueError("split 'given' needs a 'split' column in the log")
    if features is None:
        features = _infer_sides(runner, names)
    numeric_scaling = numeric_scaling or {}
    if set(numeric_scaling) - set(numeric_names):
        raise ValueError(f"numeric_scaling names columns {sorted(set(numeric_scaling) - set(numeric_names))} "
                         "that are not numeric columns of the log")
    numeric_columns = [NumericColumn(f.name, f.side, numeric_scaling.get(f.name, "standard"))
                       for f in _infer_sides(runner, numeric_names)]

    runner.materialize_ranked("offsets", USER_TOTALS_SQL, USER_ORDER, USER_SUMS)
    # The time and given splits come from a row's own columns, so the ordering pass writes them too.
    if split == "time":
        cuts = split_cuts(n)
        runner.materialize("examples", ordered_sql(time_split_expression(runner.time_cut_keys(cuts), cuts)))
    elif split == "given":
        runner.materialize("examples", ordered_sql("split"))
    else:
        runner.materialize("ordered", ordered_sql())
        if split == "random":
            order = np.random.default_rng(split_seed).permutation(n)
            labels = np.empty(n, dtype=object)
            cut_train, cut_valid = split_cuts(n)
            labels[order[:cut_train]], labels[order[cut_train:cut_valid]], labels[order[cut_valid:]] = \
                "train", "valid", "test"
            path = work_dir / "random_split.parquet"
            pq.write_table(pa.table({"_row": pa.array(np.arange(n, dtype=np.int64)),
                                     "_split": pa.array(labels, pa.string()).dictionary_encode()}), path)
            del order, labels
            runner.register_parquet("random_split", path)
        runner.materialize("examples", split_sql(split))
    counts = dict(runner.rows("SELECT _split, COUNT(*) FROM examples GROUP BY _split"))
    if not counts.get("train"):
        raise ValueError("the training split is empty")

    vocab_tables, vocabularies = {}, {}
    for i, column in enumerate(["item_id", "scenario", *[f.name for f in features]]):
        table = f"vocab_{i}"
        if column == "scenario":
            scenarios = scenario_order or sorted(r[0] for r in runner.rows(
                "SELECT DISTINCT scenario FROM examples WHERE _split = 'train'"))
            values = [str(s) for s in scenarios]
            runner.register_rows(table, [(v, i + FIRST_KNOWN_INDEX) for i, v in enumerate(values)],
                                 ["value", "idx"])
        else:
            runner.materialize_ranked(f"{table}_first_rows", first_rows_sql(d, column), ["first_row"])
            runner.materialize(table, vocabulary_sql(f"{table}_first_rows"))
            values = [r[0] for r in runner.rows(f"SELECT value FROM {table} ORDER BY idx")]
        vocab_tables[column] = table
        vocabularies[column] = Vocabulary(values)

    schema = FeatureSchema(dataset=dataset, scenarios=list(vocabularies["scenario"].values),
                           history_length=history_length, features=list(features),
                           vocab_sizes={name: len(v) for name, v in vocabularies.items()},
                           numeric_features=[_fit_numeric(runner, c) for c in numeric_columns])
    has_oracle = "oracle_prob" in kinds
    feature_names = [f.name for f in features]
    runner.materialize("prepared", keyed_examples_sql(d, feature_names, vocab_tables, has_oracle,
                                                      schema.numeric_features))
    runner.materialize("histories", histories_sql(d, history_length))
    # request (user/context side) features first, then item side, as the in-memory tables hold them
    output_features = [f.name for f in schema.request_features] + [f.name for f in schema.item_features]
    output_features += [f.name for f in schema.request_numeric] + [f.name for f in schema.item_numeric]
    for name in SPLITS:
        runner.write_split(name, output_features, has_oracle, out_dir / f"{name}.parquet", history_length)

    (out_dir / "vocab").mkdir(exist_ok=True)
    for stale in (out_dir / "vocab").glob("*.json"):
        stale.unlink()
    schema.save(out_dir / "schema.json")
    for name, vocab in vocabularies.items():
        vocab.save(out_dir / "vocab" / f"{name}.json")
    item_table = runner.to_pandas(item_table_sql(d, [f.name for f in schema.item_features]
                                                 + [f.name for f in schema.item_numeric]))
    item_table.astype(object).to_parquet(out_dir / "item_features.parquet", index=False)
    shards = {name: sorted(p.name for p in (out_dir / f"{name}.parquet").glob("*.parquet"))
              for name in SPLITS}
    return {"examples": {name: int(counts.get(name, 0)) for name in SPLITS}, "scenarios": schema.scenarios,
            "vocab_sizes": schema.vocab_sizes, "history_length": history_length, "split": split,
            "shards": shards}


def _fit_numeric(runner, column: NumericColumn) -> NumericFeature:
    """`NumericFeature.fit`, by the engine: the clip bounds, then the moments of the clipped values."""
    d = runner.dialect
    count, low, high = runner.rows(numeric_stats_sql(d, column.name, column.scaling))[0]
    if not count:
        return NumericFeature(column.name, column.side, scaling=column.scaling)
    mean, std = runner.rows(numeric_moments_sql(d, column.name, low, high))[0]
    return NumericFeature.from_moments(column.name, column.side, float(mean), float(std), float(low), float(high),
                                       column.scaling)


def _infer_sides(runner, names: list[str]) -> list[CategoricalFeature]:
    """Item side if a column never varies within an item, else user side, else context."""
    if not names:
        return []
    d = runner.dialect
    per_item = runner.rows(distinct_per_sql(d, names, "item_id"))[0]
    per_user = runner.rows(distinct_per_sql(d, names, "user_id"))[0]
    return [CategoricalFeature(name, "item" if (i or 0) <= 1 else "user" if (u or 0) <= 1 else "context")
            for name, i, u in zip(names, per_item, per_user)]


def write_canonical_log(frame: pd.DataFrame, path: Path) -> Path:
    """A validated log frame (an adapter's) as one parquet file, in its row order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False), path,
                   row_group_size=ROW_GROUP_ROWS * 4)
    return path


def prepare_to_directory(options, out_dir: Path, engine: EngineOptions = EngineOptions(), spark=None) -> dict:
    """`sainet data prepare` with an engine: your own log is read where it lies; a built-in dataset's
    adapter builds its canonical log (negatives sampled as always) and that log is prepared."""
    from model.data.datasets import check_data_options, load_log

    check_data_options(options)
    recorded = dataclasses.asdict(options)
    common = dict(dataset=options.dataset, history_length=options.history_length,
                  split=options.resolved_split(), split_seed=options.split_seed, engine=engine,
                  data_options=recorded, spark=spark)
    if options.dataset == "logs":
        return prepare_log_files(log_files(Path(options.data_dir)), out_dir, numeric=tuple(options.numeric), **common)
    log = load_log(options)
    work = engine_work_dir(engine, "sainet-log-")
    try:
        path = write_canonical_log(log.frame, work / "log.parquet")
        return prepare_log_files([path], out_dir, features=log.features, scenario_order=log.scenario_order,
                                 numeric=tuple(c.name for c in log.numeric),
                                 numeric_scaling={c.name: c.scaling for c in log.numeric if c.scaling != "standard"},
                                 **common)
    finally:
        shutil.rmtree(work, ignore_errors=True)
