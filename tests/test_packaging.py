"""Packaging: the console scripts setup.cfg declares, the licence and the citation file."""

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, str]:
  """{script name: "module:function"} from setup.cfg's [options.entry_points]."""
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / "setup.cfg")
  lines = cfg.get("options.entry_points", "console_scripts", fallback="").strip().splitlines()
  return dict((part.strip() for part in line.split("=", 1)) for line in lines if line.strip())


def test_console_scripts_are_declared():
  assert "segan-export" in console_scripts()


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_console_script_is_a_no_argument_function(name):
  # In a subprocess: the tools define absl flags when imported, and another tool imported by an
  # earlier test in this process may define flags of the same names.
  module_name, function_name = console_scripts()[name].split(":")
  code = (f"import inspect; from {module_name} import {function_name} as f; "
          "print(callable(f) and all(p.default is not p.empty or p.kind in "
          "(p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in inspect.signature(f).parameters.values()))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                        cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "True"


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_console_script_answers_help(name):
  # What the installed script does: import the module, call the function with sys.argv set.
  module_name, function_name = console_scripts()[name].split(":")
  code = (f"import sys; sys.argv = [{name!r}, '--help']; "
          f"from {module_name} import {function_name}; {function_name}()")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                        cwd=ROOT)
  output = proc.stdout + proc.stderr
  assert proc.returncode in (0, 1) and "Traceback" not in output, output[-2000:]  # absl: 1
  assert "--workdir" in output and f"{name} [flags]" not in output  # its flags and docstring


def test_license_is_the_apache_2_text_setup_cfg_names():
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / "setup.cfg")
  assert cfg.get("metadata", "license") == "Apache-2.0"
  text = (ROOT / "LICENSE").read_text()
  assert "Apache License" in text and "Version 2.0, January 2004" in text
  assert "END OF TERMS AND CONDITIONS" in text


def test_citation_file_cites_the_segan_papers():
  text = (ROOT / "CITATION.cff").read_text()
  assert text.startswith("cff-version: 1.2.0")
  for needle in ("Adversarial learning with multi-scale loss for skin lesion segmentation",
                 "1706.01805", "10.1007/s12021-018-9377-x", "license: Apache-2.0"):
    assert needle in text
