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
