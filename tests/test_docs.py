"""Generated documentation matches its single source."""

from pathlib import Path

from partner.docgen import registers_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_registers_doc_is_generated_from_the_register_map():
    committed = (DOCS / "registers.md").read_text()
    assert committed == registers_markdown(), (
        "docs/registers.md is stale: run `python -m partner.docgen`"
    )
