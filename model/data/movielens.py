"""Adapter for MovieLens-1M, in RecBole's atomic files or GroupLens's original `.dat` layout.

Scenario-Wise Rec protocol: scenario = the user's age group {1,18} / {25} / {35,45,50,56},
label = rating > 3. Every rating is a behaviour (the user watched the movie, whatever the rating).
Other features: gender, occupation, zip prefix (user side) and first genre (item side).

`protocol="scenario-wise-rec"` reproduces that benchmark's exact inputs instead: no behaviour
history, and the features user id, gender, occupation, full zip code (user side) and first genre
(item side), beside the movie id, and age as a dense input scaled to [0, 1] (its MinMaxScaler,
`sainet.numeric`'s "min-max" scaling). The benchmark fits the scaler on the whole data; we fit it on
the training split, as every statistic here. Age codes are 1..56 in every split of 1M ratings, so
the bounds come out the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from model.data.logs import InteractionLog, validate_log
from model.data.schema import CategoricalFeature

AGE_GROUPS = {"under-25": (1, 18), "25-34": (25,), "35-plus": (35, 45, 50, 56)}
FEATURES = [CategoricalFeature("gender", "user"), CategoricalFeature("occupation", "user"),
            CategoricalFeature("zip_prefix", "user"), CategoricalFeature("first_genre", "item")]
ZIP_PREFIX_LENGTH = 3
SCENARIO_WISE_REC_FEATURES = [CategoricalFeature("user", "user"), CategoricalFeature("gender", "user"),
                              CategoricalFeature("occupation", "user"), CategoricalFeature("zip", "user"),
                              CategoricalFeature("first_genre", "item")]
# its dense features and their scaling (scripts/run_movielens_rank_multi_domain.py: dense_features = ['age'],
# MinMaxScaler)
SCENARIO_WISE_REC_NUMERIC = {"age": "min-max"}


def _read_recbole(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", dtype=str, quoting=3, encoding="utf-8")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def _read_grouplens(path: Path, names: list[str]) -> pd.DataFrame:
    return pd.read_csv(path, sep="::", engine="python", header=None, names=names, dtype=str,
                       encoding="latin-1")


def read_movielens(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings, users, movies) with columns user_id, item_id, rating, timestamp / user_id, age,
    gender, occupation, zip_code / item_id, genre (space separated)."""
    data_dir = Path(data_dir)
    if (data_dir / "ml-1m.inter").exists():
        ratings = _read_recbole(data_dir / "ml-1m.inter")
        users = _read_recbole(data_dir / "ml-1m.user")
        movies = _read_recbole(data_dir / "ml-1m.item")[["item_id", "genre"]]
    elif (data_dir / "ratings.dat").exists():
        ratings = _read_grouplens(data_dir / "ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
        users = _read_grouplens(data_dir / "users.dat", ["user_id", "gender", "age", "occupation", "zip_code"])
        movies = _read_grouplens(data_dir / "movies.dat", ["item_id", "title", "genre"])
        movies["genre"] = movies["genre"].str.replace("|", " ", regex=False)
        movies = movies[["item_id", "genre"]]
    else:
        raise FileNotFoundError(f"{data_dir} holds neither ml-1m.inter (RecBole) nor ratings.dat (GroupLens)")
    return ratings, users, movies


def age_group(age: pd.Series) -> np.ndarray:
    ages = pd.to_numeric(age).astype(int)
    groups = np.full(len(ages), "", dtype=object)
    for name, members in AGE_GROUPS.items():
        groups[ages.isin(members).to_numpy()] = name
    if (groups == "").any():
        raise ValueError(f"unexpected age codes {sorted(set(ages[groups == '']))}")
    return groups


def load_movielens(data_dir: Path, protocol: str = "default", **_) -> InteractionLog:
    ratings, users, movies = read_movielens(data_dir)
    users = users.assign(
        scenario=age_group(users["age"]),
        occupation=pd.to_numeric(users["occupation"]).astype(int).astype(str),
        zip_prefix=users["zip_code"].str[:ZIP_PREFIX_LENGTH],
        user=users["user_id"], zip=users["zip_code"], age=pd.to_numeric(users["age"]).astype(int),
    )
    features = SCENARIO_WISE_REC_FEATURES if protocol == "scenario-wise-rec" else FEATURES
    numeric = SCENARIO_WISE_REC_NUMERIC if protocol == "scenario-wise-rec" else {}
    user_columns = [*(f.name for f in features if f.side == "user"), *numeric]
    movies = movies.assign(first_genre=movies["genre"].fillna("").str.split(" ").str[0])
    frame = ratings.merge(users[["user_id", "scenario", *user_columns]],
                          on="user_id", how="left", validate="many_to_one")
    frame = frame.merge(movies[["item_id", "first_genre"]], on="item_id", how="left", validate="many_to_one")
    if frame["scenario"].isna().any():
        raise ValueError("some ratings belong to users missing from the user file")
    frame["label"] = (pd.to_numeric(frame["rating"]) > 3).astype(np.int8)
    # Scenario-Wise Rec feeds no behaviour history: with no behaviours every history is empty.
    frame["is_behaviour"] = protocol != "scenario-wise-rec"
    frame = frame.drop(columns=["rating"])
    return validate_log(frame, features=features, scenario_order=list(AGE_GROUPS), numeric=tuple(numeric),
                        numeric_scaling=numeric)
