"""luts.table and luts.builder keep the public names that moved to luts.store / luts.convert."""
import pytest


def test_moved_names_stay_importable_from_their_old_modules():
    from luts import builder, convert, store, table

    for name in store.__all__:
        assert getattr(table, name) is getattr(store, name), name
    from luts.table import load_table  # noqa: F401  (the form callers use)

    for name in ("converter_tag", "export_artifact", "require_converter", "OpModelCache",
                 "METHOD_VERSION", "FORMAT_SUFFIX"):
        assert getattr(builder, name) is getattr(convert, name), name
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        table.no_such_name  # noqa: B018


def test_every_exported_name_exists():
    import luts
    from luts import builder, convert, store, table

    for mod in (luts, builder, convert, store, table):
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, (mod.__name__, missing)
