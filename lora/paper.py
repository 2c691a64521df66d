"""LoRA's published numbers (Hu et al., ICLR 2022), transcribed from ``../shared/reference/paper_targets.md``
section 4. Shown beside ours in every table."""

# Table 2, GLUE dev, RoBERTa-base: task -> method -> score (MCC for CoLA, Pearson for STS-B, accuracy
# otherwise); trainable parameters per method.
GLUE_ROBERTA_BASE = {
    "sst2": {"ft": 94.8, "bitfit": 93.7, "adapter": 94.2, "lora": 95.1},
    "mrpc": {"ft": 90.2, "bitfit": 92.7, "adapter": 88.5, "lora": 89.7},
    "cola": {"ft": 63.6, "bitfit": 62.0, "adapter": 60.8, "lora": 63.4},
    "rte": {"ft": 78.7, "bitfit": 81.5, "adapter": 71.5, "lora": 86.6},
    "stsb": {"ft": 91.2, "bitfit": 90.8, "adapter": 89.7, "lora": 91.5},
}
GLUE_PARAMS = {"ft": "125M", "bitfit": "0.1M", "adapter": "0.3M", "lora": "0.3M"}  # "adapter" = Adapter^D

# Tables 5/6 (GPT-3 175B, WikiSQL accuracy), shown as a row beside ours in the ablation tables.
ABLATION_TASK = "GPT-3, WikiSQL"
ABLATION_RANK = {"Wq,Wv": {1: 73.4, 64: 73.5}}  # Table 6: the two ends of the rank sweep in paper_targets.md
ABLATION_BUDGET = {("Wq", 8): 70.4, ("Wq,Wv", 4): 73.7, ("Wq,Wk,Wv,Wo", 2): 73.7}  # Table 5: 18M parameters
# Figure 3 (GPT-3, layer 48): the top direction of A_{r=8} and A_{r=64} overlap with phi > 0.5.
SUBSPACE_TOP_PHI = "> 0.5"
# Table 7 (GPT-3 layer 48, Wq, r 4): ||U^T Wq V^T||_F with ΔWq's / Wq's / random directions; ||ΔWq||_F.
AMPLIFICATION_R4 = {"delta_w": 0.32, "w": 21.67, "random": 0.02, "delta_w_norm": 6.91, "amplification": 21.5}
