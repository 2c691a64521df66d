"""LoRA (Hu et al., ICLR 2022). Paper code arrives in its own issue."""
