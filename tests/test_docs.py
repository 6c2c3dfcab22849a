"""Generated documentation matches its single source."""

from pathlib import Path

import pytest

from partner.docgen import dma_markdown, fill_sections, registers_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_registers_doc_is_generated_from_the_register_map():
    committed = (DOCS / "registers.md").read_text()
    assert committed == registers_markdown(), (
        "docs/registers.md is stale: run `python -m partner.docgen`"
    )


def test_dma_doc_sections_are_generated_from_the_ring_formats():
    committed = (DOCS / "dma.md").read_text()
    assert committed == dma_markdown(committed), (
        "the generated sections of docs/dma.md are stale: run `python -m partner.docgen`"
    )
    for name in ("rx_completion", "tx_descriptor", "event_entry", "partner_dma", "TOO_MANY_CHUNKS"):
        assert f"`{name}`" in committed


def test_generated_sections_are_checked_by_name():
    text = "a\n<!-- generated: x -->\nold\n<!-- end generated -->\nb\n"
    assert fill_sections(text, {"x": "new"}) == text.replace("old", "new")
    with pytest.raises(ValueError, match="unknown generated section 'x'"):
        fill_sections(text, {"y": "new"})
    with pytest.raises(ValueError, match="missing or repeated: y"):
        fill_sections(text, {"x": "new", "y": "other"})
