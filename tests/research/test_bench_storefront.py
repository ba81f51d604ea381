"""bench-storefront end to end on tiny indexes: every part's report, and --docs under its heading."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from indexer.build import index_catalog
from research.bench_storefront import title_brand, title_line
from retrieval.store import IndexLocation
from shopsearch.cli import main


def test_title_brand_and_line() -> None:
    title = "Delta Vero 1-Handle Shower Only Faucet Trim Kit in Chrome"
    assert title_brand(title) == "delta"
    assert title_line(title) == "delta vero shower"
    assert title_line("Delta Vero 2-Handle Shower Faucet in Nickel") == "delta vero shower"


@pytest.mark.slow
def test_every_part_writes_its_report(tmp_path, sample_catalog, tiny_encoder, tiny_bench):
    shop = tmp_path / "shop"
    index_catalog(sample_catalog, IndexLocation(path=shop), encoder=tiny_encoder, progress=False)
    hd = tmp_path / "hd"
    index_catalog(
        tiny_bench / "catalog.parquet", IndexLocation(path=hd), encoder=tiny_encoder, progress=False
    )
    page = tmp_path / "storefront.md"
    page.write_text(
        "# x\n\n## Sort: how relevant the sorted results stay\n\n"
        "<!-- written by: x -->\n<!-- end written: storefront-sort -->\n\n## Other\n"
    )
    work = tmp_path / "work"
    args = ["bench-storefront", "--workdir", str(work), "--index", str(shop)]
    args += ["--hd", str(tiny_bench), "--hd-index", str(hd), "--queries", "10"]
    result = CliRunner().invoke(main, [*args, "--repeats", "1", "--docs", str(page)])
    assert result.exit_code == 0, result.output
    for part in ("sort", "diversity"):
        assert (work / f"storefront-{part}.md").is_file()
    # the latency block is per catalog size, so a 55k and a 1M run sit side by side
    assert len(list(work.glob("storefront-latency-*.md"))) == 1
    text = page.read_text()
    sort_block = text.split("## Sort: how relevant the sorted results stay")[1].split("## Other")[0]
    assert "| candidates | floor |" in sort_block  # replaced in place, under its heading
    assert "**Home Depot**" in text and "| brand:2 |" in text  # appended: no block yet
    assert "| facets+sort |" in text
    only = CliRunner().invoke(main, ["bench-storefront", "--hd", str(tiny_bench)])
    assert only.exit_code != 0 and "--hd and --hd-index together" in only.output
