"""Mistakes and outages are one line on stderr and a non-zero exit status, never a
traceback: no server, a config with an unknown key, bad YAML, a spec the server
rejects, a wrong key, an unknown job, an unknown command."""

from __future__ import annotations

import subprocess

import pytest

from .services import CLI, free_port, write_config

pytestmark = pytest.mark.timeout(120)


def run(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], check=False, capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_no_server_is_one_line_that_says_what_to_do(tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    for args in (
        ["jobs"],
        ["watch", "job-000000000000"],
        ["watch", "job-000000000000", "--json"],
        ["info"],
        ["--address", address, "datasets", "list"],
    ):
        result = run(*args, "--address", address) if args[0] != "--address" else run(*args)
        line = one_line(result)
        assert result.returncode == 1
        assert line.startswith(f"tunewire {args[0] if args[0] != '--address' else 'datasets'}: ")
        assert f"cannot reach the tunewire server at {address} (connection refused)" in line
        assert "start it with `tunewire server`" in line


def test_unknown_config_key_names_line_and_suggests(tmp_path, tiny_model_dir):
    (tmp_path / "alpaca_example.json").write_text(
        '[{"instruction": "a", "input": "", "output": "b"}]'
    )
    config = write_config(tmp_path / "bad.yaml", tiny_model_dir, batch_size=None, batch_sise=2)
    # The mistake is found before any connection: no server is needed to hear about it.
    line = one_line(
        run("train", str(config), "--address", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    )
    assert (
        line
        == f"tunewire train: {config}:13: unknown key 'batch_sise' (did you mean 'batch_size'?)"
    )

    nested = tmp_path / "nested.yaml"
    nested.write_text(
        f"model: {tiny_model_dir}\ndataset: {{path: x.json}}\nhyperparameters:\n  learning_rat: 0.1\n"
    )
    line = one_line(run("train", str(nested), cwd=tmp_path))
    assert line == (
        f"tunewire train: {nested}:4: hyperparameters.learning_rat: unknown key "
        "(did you mean 'learning_rate'?)"
    )


def test_bad_yaml_and_bad_values_are_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: x\ndata: [unclosed\n")
    assert one_line(run("train", str(broken))).startswith(f"tunewire train: {broken}:")

    typed = tmp_path / "typed.yaml"
    typed.write_text("model: x\ndataset: {path: a.json}\niters: many\nfine_tune_type: qlora\n")
    line = one_line(run("train", str(typed)))
    assert f"{typed}:4: fine_tune_type must be lora, dora or full, got 'qlora'" in line


def test_server_side_errors_are_one_line(services, tiny_model_dir):
    spec = write_config(
        services.root / "rank0.yaml", tiny_model_dir, lora_parameters="{rank: 0, scale: 1.0}"
    )
    line = one_line(services.cli("train", str(spec)))
    assert "rejected by the server: spec.lora.rank: must be between 1 and 1024, got 0" in line

    line = one_line(services.cli("jobs", "show", "job-0123456789ab"))
    assert (
        line
        == "tunewire jobs: training job 'job-0123456789ab' not found (`tunewire jobs` lists yours)"
    )

    line = one_line(services.cli("jobs", TUNEWIRE_API_KEY="tw_wrong"))
    assert line.startswith(f"tunewire jobs: the server at {services.address} refused the call: ")
    assert "tw_wrong" not in line  # keys never appear in errors


def test_verbose_adds_details_below_the_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result = run("jobs", "--address", address, "--verbose")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    first, *details = result.stderr.strip().splitlines()
    assert "cannot reach the tunewire server" in first
    assert any(line.strip() == "code: UNAVAILABLE" for line in details)


def test_unknown_command_suggests_the_nearest():
    line = one_line(run("wacth", "job-1"))
    assert line == "tunewire: unknown command 'wacth'; did you mean 'watch'?"
