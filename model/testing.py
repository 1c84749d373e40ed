"""Small schemas, valid random inputs and seeded models for testing a model against the shape
contract (`model.batch.Batch` in, [B, C] logits out): used by this project's tests and by export's
parity check, and meant for anyone adding a model of their own."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import FIRST_KNOWN_INDEX, CategoricalFeature, FeatureSchema, NumericFeature
from model.models import build_model


def random_inputs(schema: FeatureSchema, batch: int, length: int, candidates: int, seed: int,
                  empty_rows: tuple[int, ...] = ()) -> tuple[torch.Tensor, ...]:
    """Valid random indices for every input (standard normal values for the numeric ones), with left
    padding and some users without history."""
    g = torch.Generator().manual_seed(seed)
    n_items, n_scen = schema.num_item_embeddings, schema.num_scenario_embeddings
    hist_items = torch.randint(1, n_items, (batch, length), generator=g)
    hist_scen = torch.randint(1, n_scen, (batch, length), generator=g)
    pad = torch.randint(0, length + 1, (batch,), generator=g)
    padded = torch.arange(length)[None, :] < pad[:, None]
    for row in empty_rows:
        padded[row] = True
    hist_items[padded] = 0
    hist_scen[padded] = 0
    request = [torch.randint(0, schema.vocab_sizes[f.name], (batch,), generator=g) for f in schema.request_features]
    item = [torch.randint(0, schema.vocab_sizes[f.name], (batch, candidates), generator=g)
            for f in schema.item_features]
    return (
        hist_items, hist_scen,
        torch.randint(FIRST_KNOWN_INDEX, n_scen, (batch,), generator=g),
        torch.stack(request, 1) if request else torch.zeros((batch, 0), dtype=torch.long),
        torch.randint(1, n_items, (batch, candidates), generator=g),
        torch.stack(item, 2) if item else torch.zeros((batch, candidates, 0), dtype=torch.long),
        torch.randn((batch, len(schema.request_numeric)), generator=g),
        torch.randn((batch, candidates, len(schema.item_numeric)), generator=g),
    )


def tiny_schema(history_length: int = 10, items: int = 50, genres: int = 6, context_feature: bool = False,
                scenarios: tuple[str, ...] = ("a", "b", "c"), numeric: bool = False) -> FeatureSchema:
    """Scenarios a, b, c (indices 2-4), a user feature `gender` (4 values), an item feature `genre`
    and, with `context_feature`, a request-side `hour` (6 values); with `numeric`, the dense
    features `age` (user side) and `price` (item side). Vocabulary sizes count the padding and OOV
    indices."""
    features = [CategoricalFeature("gender", "user")]
    vocab_sizes = {"item_id": items, "scenario": len(scenarios) + FIRST_KNOWN_INDEX, "gender": 4, "genre": genres}
    if context_feature:
        features.append(CategoricalFeature("hour", "context"))
        vocab_sizes["hour"] = 6
    features.append(CategoricalFeature("genre", "item"))
    dense = [NumericFeature("age", "user", 35.0, 12.0, 18.0, 80.0),
             NumericFeature("price", "item", 20.0, 15.0, 0.5, 200.0)] if numeric else []
    return FeatureSchema(dataset="test", scenarios=list(scenarios), history_length=history_length,
                         features=features, vocab_sizes=vocab_sizes, numeric_features=dense)


def random_batch(schema: FeatureSchema, batch: int = 6, candidates: int = 3, seed: int = 0,
                 empty_rows: tuple[int, ...] | range = (0,), target_scenario: torch.Tensor | None = None) -> Batch:
    """A Batch of `random_inputs` over the schema's full history length; `empty_rows` have no history."""
    inputs = Batch(*random_inputs(schema, batch, schema.history_length, candidates, seed, tuple(empty_rows)))
    return inputs if target_scenario is None else inputs._replace(target_scenario=target_scenario)


def seeded_model(name: str, schema: FeatureSchema, **config) -> nn.Module:
    """The registered model `name`, built after `torch.manual_seed(0)`, in eval mode."""
    torch.manual_seed(0)
    return build_model(name, schema, **config).eval()


def linear_widths(module: nn.Module) -> list[int]:
    """Output sizes of every nn.Linear in `module`, in registration order."""
    return [m.out_features for m in module.modules() if isinstance(m, nn.Linear)]


def write_grouplens_folder(root: Path) -> Path:
    """A tiny copy of GroupLens's original ml-1m layout ('::'-separated, latin-1)."""
    folder = root / "ml-1m"
    folder.mkdir()
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    (folder / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Am\xe9lie (2001)::Comedy|Romance\n"
        "3::Heat (1995)::Action|Crime|Thriller\n".encode("latin-1"))
    (folder / "ratings.dat").write_text(
        "1::1::5::978300760\n1::2::3::978302109\n2::3::4::978301968\n2::1::2::978300275\n"
        "3::2::4::978824291\n3::3::1::978824292\n3::1::5::978824293\n")
    return folder
