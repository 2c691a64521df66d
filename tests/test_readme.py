"""The README's generated tables equal the files the plotting code wrote (no hand-typed numbers)."""
import pytest

from common.readme import main, refresh


def test_readme_blocks_match_their_files():
    assert main(["--check"]) == 0


def test_refresh_replaces_the_body_and_stale_blocks_are_caught(tmp_path):
    (tmp_path / "t.md").write_text("| a | 1 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- generated: t.md -->\n| a | 0 |\n<!-- end generated -->\ny\n")
    assert main(["--check", "--readme", str(readme)]) == 1
    assert "| a | 1 |" in refresh(readme.read_text(), tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.md"):
        refresh("<!-- generated: missing.md -->\n<!-- end generated -->", tmp_path)


def test_repeats_table_summarises_each_configuration_over_repeats():
    import pandas as pd

    from common.plots import repeats_table

    rows = []
    for rep, (rate, rss) in enumerate([(10.0, 100.0), (30.0, 300.0), (20.0, 200.0)]):
        rows += [{"bench": "train_step", "method": "lora", "seq_len": 64, "repeat": rep, "metric": "train_examples_per_s",
                  "value": rate, "trainable_params": 74498},
                 {"bench": "train_step", "method": "lora", "seq_len": 64, "repeat": rep, "metric": "peak_rss_mb",
                  "value": rss, "trainable_params": 74498},
                 {"bench": "inference", "method": "base", "seq_len": 64, "repeat": rep,
                  "metric": "infer_examples_per_s", "value": 2 * rate, "trainable_params": float("nan")},
                 {"bench": "inference", "method": "base", "seq_len": 64, "repeat": rep, "metric": "peak_rss_mb",
                  "value": rss, "trainable_params": float("nan")}]
    lines = repeats_table(pd.DataFrame(rows)).splitlines()
    assert lines[0].startswith("| bench | length |")
    assert lines[2] == "| train | 64 | lora | 74,498 | 20.0 [10.0, 30.0] | 200 |"
    assert lines[3] == "| inference | 64 | base | — | 40.0 [20.0, 60.0] | 200 |"
    one = repeats_table(pd.DataFrame([r for r in rows if r["bench"] == "train_step"])).splitlines()
    assert one[0].startswith("| length |") and "train ex/s" in one[0] and len(one) == 3
