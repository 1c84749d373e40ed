"""SAINet (Huang et al., "Towards Scenario-adaptive User Behavior Modeling for Multi-scenario
Recommendation"), sections 4.1-4.3, with the Table 3 ablations as registered variants.

Shape contract: a forward takes B requests (history [B, N], behaviour scenarios [B, N], target
scenario [B], request features [B, F]) with C candidates each ([B, C], item features [B, C, F_i])
and returns logits [B, C]. Everything over the history, including TIF's keys and values, runs
once per request and is shared by its C candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import FeatureSchema
from model.layers.attention import (
    ScenarioAwareSelfAttention,
    ScenarioTailoringGate,
    TargetAwareInterestFusion,
    masked_mean,
)
from model.layers.embedding import FeatureEmbeddings, init_normal_
from model.layers.towers import DEFAULT_HIDDEN, MLPTower, ScenarioAwareTower, SdtGateInput
from model.models.registry import register_model


class ScenarioAdaptiveBlock(nn.Module):
    """Sec. 4.1: SIE (scenario-aware MHA) followed by STM (target-scenario gate). Output: `dim`."""

    def __init__(self, dim: int, config: SAINet.Config):
        super().__init__()
        self.sie = None if config.sie == "off" else ScenarioAwareSelfAttention(
            dim, config.heads, use_scenario=config.sie == "scenario",
            residual=config.sie_residual, layer_norm=config.sie_layer_norm)
        self.stm = ScenarioTailoringGate(dim, config.gamma, vector=config.stm_vector_gate) if config.stm else None
        self.output_dim = dim

    def forward(self, x, scenario_emb, target_scenario_emb, mask):
        x_hat = self.sie(x, scenario_emb, mask) if self.sie is not None else x
        x_next = self.stm(x_hat, target_scenario_emb) if self.stm is not None else x_hat
        return x_next * mask[..., None]


class SAINet(nn.Module):
    @dataclass(frozen=True)
    class Config:
        embed_dim: int = 32
        blocks: int = 2                          # L
        heads: int = 4                           # h
        gamma: float = 2.0                       # STM scaling factor
        # "scenario": eq. 3; "plain": MHA without M_S; "off": no MHA ("w/o SIE" removes the module).
        sie: Literal["scenario", "plain", "off"] = "scenario"
        sie_residual: bool = False
        sie_layer_norm: bool = False
        stm: bool = True
        stm_vector_gate: bool = True             # eq. 4: v_i in R^d
        tif: Literal["attention", "mean"] = "attention"   # "mean": the "w/o TIF" mean pooling
        tif_scaled: bool = False
        sdt: bool = True                         # False: plain DNN tower ("w/o SDT")
        sdt_gate_input: SdtGateInput = "hidden+scenario"
        sdt_gate_scale: float = 1.0              # 1: eq. 11's sigmoid; 2: PEPNet's 2*sigmoid (gates start at 1)
        tower: tuple[int, ...] = DEFAULT_HIDDEN
        init_std: float = 0.05
        # Sec. 5.1: "A Gaussian distribution (mu = 0 and sigma = 0.05) is used to initialize the
        # parameters in DNN." We read "DNN" as the embeddings and the tower ("dnn"): applied to the
        # attention and gate projections too ("all"), the products of several 0.05-scale factors
        # leave TIF's query/key gradients near 1e-20 at the start, below Adam's epsilon, so those
        # projections never train. Attention and gate projections get Xavier weights instead.
        init_scope: Literal["dnn", "all"] = "dnn"

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.embeddings = FeatureEmbeddings(schema, d)
        self.blocks = nn.ModuleList(ScenarioAdaptiveBlock(d, config) for _ in range(config.blocks))
        self.fusion = TargetAwareInterestFusion(d, query_dim=2 * d, scaled=config.tif_scaled) \
            if config.tif == "attention" else None
        # Eq. 9: H^0 = [V_t, e_item, e_o].
        tower_input = 2 * d + self.embeddings.request_dim + self.embeddings.item_feature_dim
        if config.sdt:
            self.tower = ScenarioAwareTower(tower_input, d, config.tower, config.sdt_gate_input,
                                            config.sdt_gate_scale)
        else:
            # Without SDT the target scenario still enters, as one more input of the plain tower,
            # so the ablation removes the gating and not the information.
            self.tower = MLPTower(tower_input + d, config.tower)
        self.output_dim = 1
        init_normal_(self, config.init_std, linear=config.init_scope == "all")
        if config.init_scope == "dnn":
            init_normal_(self.tower, config.init_std)

    def encode_history(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-request part: (interests [B, N, d], mask [B, N], target scenario embedding [B, d])."""
        mask = batch.history_mask
        target_scenario = self.embeddings.scenario(batch.target_scenario)
        scenario_emb = self.embeddings.scenario(batch.hist_scenarios)
        x = self.embeddings.item(batch.hist_items)              # X^0, eq. 6
        for block in self.blocks:
            x = block(x, scenario_emb, target_scenario, mask)
        return x, mask, target_scenario

    def forward(self, batch: Batch) -> torch.Tensor:
        interests, mask, target_scenario = self.encode_history(batch)
        num_candidates = batch.cand_items.shape[1]
        item = self.embeddings.item(batch.cand_items)                                   # [B, C, d]
        scenario = target_scenario[:, None, :].expand(-1, num_candidates, -1)            # [B, C, d]
        if self.fusion is not None:
            fused = self.fusion(torch.cat([item, scenario], dim=-1), interests, mask)    # eq. 7-8
        else:
            fused = masked_mean(interests, mask)[:, None, :].expand(-1, num_candidates, -1)
        hidden = torch.cat([fused, item, self.embeddings.other_features(batch)], dim=-1)
        if self.config.sdt:
            return self.tower(hidden, scenario)                                          # eq. 10-11
        return self.tower(torch.cat([hidden, scenario], dim=-1))


register_model("sainet", SAINet, "SAINet as in the paper (L=2, h=4, gamma=2)")
register_model("sainet-no-sie", SAINet, "ablation: blocks without SIE", sie="off")
register_model("sainet-no-stm", SAINet, "ablation: blocks without STM", stm=False)
register_model("sainet-no-tif", SAINet, "ablation: mean pooling instead of TIF", tif="mean")
register_model("sainet-no-sdt", SAINet, "ablation: plain DNN tower instead of SDT", sdt=False)
