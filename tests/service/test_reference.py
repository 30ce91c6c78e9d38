"""README.md's generated tables match the registry, the error codes and the settings."""

from pathlib import Path

from service import reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tables_are_fresh():
    text = README.read_text()
    assert reference.render(text) == text, "run: python -m service.reference"


def test_every_section_is_in_the_readme():
    text = README.read_text()
    for name in reference.SECTIONS:
        assert f"<!-- BEGIN {name} (generated) -->" in text


def test_tables_name_every_op_code_and_setting():
    from autograd import OPS
    from service.config import Settings
    from service.errors import CODES
    assert all(f"| `{name}` |" in reference.ops_table() for name in OPS)
    assert all(f"`{code}`" in reference.codes_table() for code in CODES)
    assert all(f"`GRADSERVE_{n.upper()}`" in reference.settings_table()
               for n in Settings.model_fields)
