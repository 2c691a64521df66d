"""Houlsby et al. 2019 and AdapterFusion (Pfeiffer et al. 2021) published numbers, transcribed from
``../shared/reference/paper_targets.md`` section 3. Shown beside ours in every table."""

# AdapterFusion Table 1 (BERT-base, 16 tasks): the means per column, and the small target tasks' ST-A -> Fusion
# w/ ST-A scores (accuracy) that the claim "fusion helps most on small tasks" rests on.
TABLE1_MEANS = {"head_only": 64.17, "ft": 75.51, "st_a": 76.05, "mt_a": 75.80, "fusion_st_a": 77.33,
                "fusion_mt_a": 77.06}
TABLE1_TARGETS = {"rte": {"st_a": 71.04, "fusion_st_a": 76.82}, "cb": {"st_a": 86.07, "fusion_st_a": 92.14},
                  "mrpc": {"st_a": 85.16, "fusion_st_a": 90.29}}
# Houlsby Fig. 3/4 (MNLI-m, BERT-base): top-layers FT at ~9M parameters, adapter size 64 at ~2M, full FT.
TRADEOFF_MNLI = {"top_k_9M": 77.8, "adapter_64_2M": 83.7, "ft": 84.4}
