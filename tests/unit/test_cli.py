"""The `radflow` command: user mistakes give one line and a hint, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radflow.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "/no/such/folder"], "error: no folder at /no/such/folder"),
        (["ingest", "ftp://host/x"], "error: bad source 'ftp://host/x'"),
        (["score", "s3://"], "error: bad source 's3://': no bucket"),
        (["synth", "out", "--size", "64x64"], "error: bad --size '64x64'"),
    ],
)
def test_user_mistakes_are_one_line_and_a_hint(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0] == message or lines[0].startswith(message)
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.output


def test_missing_labels_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path), "--labels", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "no labels file" in result.output


def test_synth_writes_studies_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = runner.invoke(app, ["synth", str(out), "--studies", "2", "--size", "32x32x10"])
    assert result.exit_code == 0, result.output
    assert len(list(out.rglob("*.dcm"))) >= 20
    assert (out / "labels.csv").read_text().count("\n") == 3


def test_inspect_nifti_json_matches_nibabel() -> None:
    import json

    import nibabel as nib
    import numpy as np

    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    affine = nib.load(path).affine
    lps = np.diag([-1, -1, 1]) @ affine[:3, :4]
    assert got["origin"] == pytest.approx(list(lps[:, 3]))
    assert got["size"] == list(nib.load(path).shape[:3])


def test_inspect_missing_path() -> None:
    result = runner.invoke(app, ["inspect", "/no/such.nii"])
    assert result.exit_code == 2 and result.output.startswith("error: nothing at /no/such.nii")


def test_register_writes_a_transform_that_undoes_a_known_motion(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np
    import SimpleITK as sitk

    fixed_path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    fixed = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    truth = sitk.Euler3DTransform(centre, 0.05, -0.08, 0.1, (3.0, -2.0, 4.0))
    moving_path = tmp_path / "moving.nii.gz"
    # moving(x) = fixed(truth^-1(x)): a fixed point p sits at truth(p) in the moving image.
    sitk.WriteImage(
        sitk.Resample(fixed, fixed, truth.GetInverse(), sitk.sitkLinear, 0.0), str(moving_path)
    )

    out = tmp_path / "t.tfm"
    result = runner.invoke(
        app,
        [
            "register",
            str(fixed_path),
            str(moving_path),
            "--out-transform",
            str(out),
            "--out-image",
            str(tmp_path / "moved.nii.gz"),
            "--qc",
            str(tmp_path / "qc.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    found = sitk.ReadTransform(str(out))
    arr = sitk.GetArrayFromImage(fixed)
    idx = np.argwhere(arr > arr.mean())[::50]
    points = [fixed.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]]) for p in idx]
    tre = np.mean(
        [
            np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p)))
            for p in points
        ]
    )
    assert tre < 1.0
    assert (tmp_path / "moved.nii.gz").exists()
    assert (tmp_path / "qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_masks_csv_stops_ingest_before_anything_runs(tmp_path: Path) -> None:
    masks = tmp_path / "masks.csv"
    masks.write_bytes(b"\xef\xbb\xbfstudy_uid,path\n1.2.3,mask.nii.gz\n")
    result = runner.invoke(app, ["ingest", str(tmp_path), "--masks", str(masks)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [
        "error: masks CSV line 2: the mask file does not exist",
        "hint: paths are relative to the CSV's folder",
    ]


def _main_with(app_body: str) -> subprocess.CompletedProcess[str]:
    """`radflow.cli.main()` in a new process (it ends the process itself), with `app`
    replaced by APP_BODY, the body of a function."""
    script = "\n".join(
        [
            "import atexit, os, signal, sys, weakref",
            "from radflow import cli",
            "class TeardownSays:",  # prints when the interpreter's teardown deletes it
            "    def __del__(self): print('torn down', flush=True)",
            "def app():",
            *(f"    {line}" for line in textwrap.dedent(app_body).strip().splitlines()),
            "cli.app = app",
            "cli.main()",
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


def test_ctrl_c_while_typer_builds_the_command_line_is_the_one_line_and_130() -> None:
    """CI once sent Ctrl-C 0.5 s after start, while Typer read the commands' signatures: a
    traceback and -2 instead of the interrupted line and 130. A real SIGINT to the process
    at that point, with Python's own SIGINT handler as a terminal's `radflow` has it."""
    ended = _main_with(
        """
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)
        """
    )
    assert ended.returncode == 130
    assert ended.stderr == "interrupted; run the same command again to resume\n"


@pytest.mark.parametrize(("end", "status"), [("", 0), ("sys.exit(2)", 2), ("sys.exit('no')", 1)])
def test_the_command_ends_with_its_status_after_every_exit_handler_and_no_teardown(
    end: str, status: int
) -> None:
    """`main` ends the process itself after the last exit handler (the interpreter's teardown
    took 1-2.5 s of a flow command): handlers and finalizers registered during the command
    still run, buffered output is written, the status is the command's, and nothing is torn
    down (a global's `__del__` runs only in the teardown)."""
    ended = _main_with(
        f"""
        sys.modules["__main__"].keep = TeardownSays()
        class Held: pass
        sys.modules["__main__"].held = Held()
        weakref.finalize(sys.modules["__main__"].held, print, "finalized")
        atexit.register(print, "exit handler")
        sys.stdout.write("buffered, no newline")
        {end}
        """
    )
    assert ended.returncode == status
    assert ended.stdout == "buffered, no newlineexit handler\nfinalized\n"
