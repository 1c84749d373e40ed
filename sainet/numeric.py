"""Numeric (dense) features: the one definition of how a raw number becomes a model input.

Shared by training (`model.data`, which fits the statistics on the training split and transforms
every split) and serving (`service.artifact`, which reads them from the artifact's schema), so the
two can never disagree. Numpy only: the service imports it without torch.

The rule, per feature, with statistics fit on the training split's finite values:

    missing (None, NaN, +-inf, text that is not a number)  -> the training mean (so 0 once standardised)
    clipped to [low, high]  = the 0.1% and 99.9% quantiles (order statistics: `inverted_cdf`, the
                              SQL standard's PERCENTILE_DISC, so DuckDB and Spark find the same values)
    standardised            (x - mean) / std, mean and std of the clipped training values (std 1
                              when they are constant), as float32

or, with `scaling="min-max"` (sklearn's MinMaxScaler, as Scenario-Wise Rec scales its dense age):

    missing                 -> the training mean
    clipped to [low, high]  = the training minimum and maximum (the whole range, no quantiles)
    min-max scaled          (x - low) / (high - low), in [0, 1] (high - low taken as 1 when constant)

Both are (clip(x) - offset) / scale (`offset`, `scale`), so they share `transform` and the engines' SQL.

`mean` and `std` are kept rounded to float32: the engines sum in their own order, and rounding makes
their last-bit differences vanish (the parity tests hold both paths to the same values).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CLIP_QUANTILES = (0.001, 0.999)
QUANTILE_METHOD = "inverted_cdf"
SCALINGS = ("standard", "min-max")


def as_numbers(values) -> np.ndarray:
    """Raw values as float64, NaN where a value is missing or not a finite number."""
    array = np.asarray(values)
    if array.dtype.kind in "fiu":
        array = array.astype(np.float64)
    else:   # text, None, pandas' NA: one by one
        array = np.array([to_number(v) for v in array.reshape(-1)], dtype=np.float64).reshape(array.shape)
    return np.where(np.isfinite(array), array, np.nan)


def to_number(value: Any) -> float:
    """One raw value (a number, numeric text as a Redis hash holds it, None) as a float; NaN when
    it is missing or not a finite number (bools are not numbers)."""
    if value is None or isinstance(value, bool):
        return math.nan
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _float32(value: float) -> float:
    return float(np.float32(value))


@dataclass(frozen=True)
class NumericFeature:
    """A dense feature and the statistics of its transform (fit on the training split)."""

    name: str
    side: str               # "user", "item" or "context", as for categorical features
    mean: float = 0.0
    std: float = 1.0
    low: float = 0.0
    high: float = 0.0
    scaling: str = "standard"   # one of SCALINGS

    @classmethod
    def fit(cls, name: str, side: str, values, scaling: str = "standard") -> NumericFeature:
        """Statistics of the finite training values (none at all: the feature is constantly 0)."""
        if scaling not in SCALINGS:
            raise ValueError(f"numeric feature {name!r}: scaling {scaling!r} is not one of {SCALINGS}")
        finite = as_numbers(values)
        finite = finite[~np.isnan(finite)]
        if finite.size == 0:
            return cls(name, side, scaling=scaling)
        if scaling == "min-max":
            low, high = float(finite.min()), float(finite.max())
        else:
            low, high = (float(q) for q in np.quantile(finite, CLIP_QUANTILES, method=QUANTILE_METHOD))
        clipped = np.clip(finite, low, high)
        return cls.from_moments(name, side, float(clipped.mean()), float(clipped.std()), low, high, scaling)

    @classmethod
    def from_moments(cls, name: str, side: str, mean: float, std: float, low: float, high: float,
                     scaling: str = "standard") -> NumericFeature:
        """The feature from its clipped mean and (population) std as any engine computed them."""
        std = _float32(std)
        return cls(name, side, _float32(mean), std if std > 0 and math.isfinite(std) else 1.0, low, high, scaling)

    @property
    def offset(self) -> float:
        """Subtracted from the clipped value: the mean (standard) or the minimum (min-max)."""
        return self.low if self.scaling == "min-max" else self.mean

    @property
    def scale(self) -> float:
        """Divides the clipped value minus `offset`: the std (standard) or the range (min-max)."""
        if self.scaling == "min-max":
            return self.high - self.low if self.high > self.low else 1.0
        return self.std

    def transform(self, values) -> np.ndarray:
        """Model inputs (float32) for raw values of any shape."""
        numbers = as_numbers(values)
        imputed = np.where(np.isnan(numbers), self.mean, numbers)
        return ((np.clip(imputed, self.low, self.high) - self.offset) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NumericFeature:
        """Checked: an artifact's schema is read by the service, and a bad one must not serve."""
        feature = cls(**data)
        if feature.scaling not in SCALINGS:
            raise ValueError(f"numeric feature {feature.name!r}: scaling must be one of {SCALINGS}")
        numbers = (feature.mean, feature.std, feature.low, feature.high)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
            raise ValueError(f"numeric feature {feature.name!r}: mean, std, low and high must be finite numbers")
        if feature.std <= 0 or feature.low > feature.high:
            raise ValueError(f"numeric feature {feature.name!r}: needs std > 0 and low <= high")
        return feature
