"""P-Tuning v2's published numbers (Liu et al., ACL 2022), transcribed from
``../shared/reference/paper_targets.md`` section 2. Shown beside ours in every table; "approx" values
were read off the paper's plots."""

# Tables 2/3: FT / PT / PT-2 on dev (micro-F1 for CoNLL03). Only tasks we also run are listed;
# the paper reports SuperGLUE RTE (the same data as GLUE RTE).
MAIN = {
    "rte": {"BERT-large": (70.4, 53.5, 78.3), "RoBERTa-large": (86.6, 58.8, 89.5)},
    "conll2003": {"BERT-large": (92.8, 81.9, 90.2), "RoBERTa-large": (92.6, 86.1, 92.8)},
}
# Head ablation (RoBERTa-large, [CLS] + linear): SST-2 96.3 — PT-2 only.
PT2_ONLY = {"sst2": {"RoBERTa-large": 96.3}}

# Depth figure (approx, BERT-large, 24 layers): accuracy with prompts in the bottom k (ascending)
# or top k (descending) layers.
DEPTH_LAYERS = (4, 8, 12, 16, 20, 24)
DEPTH = {
    "rte": {"ascending": (58, 59, 57, 69, 75, 78), "descending": (69, 76, 77, 76, 77, 78)},
    "boolq": {"ascending": (62, 63, 64, 62, 69, 75.7), "descending": (64, 62, 66, 70, 72, 75.7)},
}
# Reparameterisation x length (approx): RTE MLP peak 89.2 at length ~8, embedding 88.4.
REPARAM_NOTE = ("paper (RoBERTa-large, approx): RTE best with MLP 89.2 at length ~8 vs embedding 88.4; "
                "simple classification prefers short prompts (< 20), sequence labelling ~100")
