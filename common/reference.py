"""Published reference numbers for the `small` scale's calibration (never typed into a results table by hand:
tables read them from here, beside our runs).

MiniLM-L6xH384 (Wang et al. 2020), GLUE dev, fine-tuned: microsoft/unilm, ``minilm/README.md`` ("Fine-tuning
on NLU tasks" table; MiniLM-L6xH384 row). It is the model all-MiniLM-L6-v2 starts from (via
nreimers/MiniLM-L6-H384-uncased, every second layer of MiniLM-L12-H384); all-MiniLM-L6-v2 was then trained
as a sentence encoder on 1B sentence pairs, so its fine-tuned scores may differ. No STS-B or CoNLL-2003
number is published for it: those rows compare with the full-data runs we measure.
"""

MINILM_L6_H384_GLUE_DEV = {"sst2": 91.5, "cola": 47.5, "rte": 68.8, "mrpc": 88.9}
MINILM_SOURCE = "microsoft/unilm minilm/README.md (MiniLM-L6xH384, GLUE dev)"
