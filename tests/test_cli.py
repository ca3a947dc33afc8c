import subprocess
import sys


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "xdyna_core", "--help"], capture_output=True, text=True, check=True).stdout
    assert "xdyna" in out


def test_app_builds():
    import app

    demo = app.build_demo()
    assert demo is not None
