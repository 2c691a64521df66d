"""P-Tuning v2 (Liu et al., ACL 2022): deep prompts. Paper code arrives in its own issue."""
