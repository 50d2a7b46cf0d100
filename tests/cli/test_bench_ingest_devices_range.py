"""``bench ingest --devices`` below 1 names the range this process allows, upper bound
included (it named "[1, inf)", though more than the open-file limit allows is refused too)."""

from __future__ import annotations

import sys

import pytest

from edgewise.cli import main


class Ran(Exception):
    """The bench started: the refusal did not come first."""


def _must_not_run(*a: object, **k: object) -> None:
    raise Ran


@pytest.mark.parametrize("devices", ["0", "-3"])
def test_bench_ingest_devices_below_one_names_the_whole_allowed_range(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        devices: str) -> None:
    import resource

    import edgewise.bench.ingest as ingest
    from edgewise.cli.bench_ingest import FILES_PER_DEVICE, FILES_RESERVED

    monkeypatch.setattr(ingest, "run_ingest_bench", _must_not_run)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    top = (1024 - FILES_RESERVED) // FILES_PER_DEVICE
    monkeypatch.setattr(sys, "argv", ["edgewise", "bench", "ingest", "--devices", devices])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: --devices must be an int in [1, {top}]"), err[0]
    assert "inf" not in err[0] and err[0].endswith(f"Got {devices}.")
