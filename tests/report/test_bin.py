"""The real `bin/report` in a subprocess: a report, and bad input as one line with exit status 2."""

from tests.cli.run_bin import run_bin
from tests.report.test_render import write_run


def test_bin_report_writes_the_report(tmp_path):
    write_run(tmp_path)
    result = run_bin("report", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "report.md")
    assert "| ES | 87.50 |" in (tmp_path / "report.md").read_text()


def test_bin_report_malformed_line(tmp_path):
    write_run(tmp_path)
    with open(tmp_path / "curve.jsonl", "a") as f:
        f.write('{"evaluation": 1, "step": \n')
    result = run_bin("report", f"--workdir={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bin/report: error: ")
    assert f"{tmp_path / 'curve.jsonl'} line 7: invalid JSON" in lines[0]


def test_bin_report_missing_directory(tmp_path):
    result = run_bin("report", f"--workdir={tmp_path / 'nope'}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"bin/report: error: run directory not found: {tmp_path / 'nope'}"
