"""The CLI's layout promises: every command registered explicitly, light imports for --help."""
import subprocess
import sys

from ofa_deploy.cli import main
from ofa_deploy.cli.lut import BUILTIN_TARGETS
from ofa_deploy.cli.train import PHASE_NAMES

COMMANDS = {"bench", "devices", "eval", "export", "inspect", "lut", "predictor", "profile",
            "search", "spaces", "specialize", "train"}


def test_every_command_is_registered():
    assert set(main.commands) == COMMANDS
    assert {"show", "import-reference", "export-reference", "validate", "calibrate",
            "predict"} == set(
        main.commands["lut"].commands)
    assert {"collect", "train"} == set(main.commands["predictor"].commands)


def test_help_constants_match_the_packages_they_spell_out():
    from luts.store import BUILTIN_TABLES
    from ofa_deploy.cli._common import ESTIMATOR_CHOICES
    from profilers.protocol import ESTIMATORS
    from supernet.training.config import PHASES

    assert tuple(BUILTIN_TABLES) == BUILTIN_TARGETS
    assert tuple(PHASES) == PHASE_NAMES
    assert tuple(ESTIMATORS) == ESTIMATOR_CHOICES


def test_every_measuring_command_offers_the_same_estimator_choice():
    def opt(cmd):
        return next(p for p in cmd.params if p.name == "estimator")

    lut = main.commands["lut"].commands
    for cmd in (main.commands["profile"], main.commands["specialize"], main.commands["bench"],
                lut["validate"], lut["calibrate"]):
        o = opt(cmd)
        assert o.opts == ["--estimator"] and o.default is None, cmd.name
        assert tuple(o.type.choices) == ("median-pooled", "best-round-median"), cmd.name


def _imported_after(args):
    code = ("import sys\nfrom ofa_deploy.cli import main\n"
            f"try:\n    main({args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(m for m in ('torch', 'numpy', 'onnx', 'onnxruntime', "
            "'ai_edge_litert', 'yaml', 'matplotlib') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split("\n")[-2].split())


def test_help_imports_no_heavy_library():
    assert _imported_after(["--help"]) == set()
    for command in sorted(COMMANDS):
        assert _imported_after([command, "--help"]) == set(), command
