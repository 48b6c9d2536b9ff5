"""A miniature Goodfellow et al. 2015 reproduction (tiny models, a few hundred samples) end to end."""
import json

import pytest
from click.testing import CliRunner

from advlab.cli import main


@pytest.mark.mnist
def test_goodfellow2015_miniature_pipeline(mnist_cache, tmp_path):
    out = tmp_path / "gf"
    res = CliRunner().invoke(main, ["reproduce", "goodfellow2015", "--budget", "tiny", "--out", str(out),
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    ids = {row["id"] for row in r["rows"]}
    assert {"G1", "G2", "G4", "G5", "G7", "G8", "G9", "G10", "G11", "G12", "G13", "G14"} <= ids
    for row in r["rows"]:
        assert row["ours"] is not None, row["quantity"]
    assert r["versions"]["advlab"] and r["seeds"] == 1 and "per_seed" in r
    err = r["transfer"]["error"]
    assert len(err) == len(r["transfer"]["names"]) and all(0 <= v <= 1 for row in err for v in row)
    md = (out / "report.md").read_text()
    assert "Paper vs advlab" in md and "G13" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") == 4
    (out / "report.md").unlink()
    again = CliRunner().invoke(main, ["report", str(out)])
    assert again.exit_code == 0 and (out / "report.md").exists()
