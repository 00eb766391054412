"""Where the CLI finds the server and its token: flags, then the environment, then the
local stack's files, and the local admin token never leaves this machine."""

from __future__ import annotations

from pathlib import Path

from client.config import local_url, resolve


def _token_file(root: Path, text: str = "swl_local_secret") -> Path:
    path = root / "var" / "admin.token"
    path.parent.mkdir(parents=True)
    path.write_text(text + "\n")
    return path


def test_flags_win_over_environment_and_files(tmp_path: Path) -> None:
    _token_file(tmp_path)
    env = {
        "SWEEPLAB_URL": "http://env:1",
        "SWEEPLAB_TOKEN": "swl_env",
        "SWEEPLAB_HOME": str(tmp_path),
    }
    got = resolve("http://flag:2/", "swl_flag", env=env, cwd=tmp_path)
    assert (got.url, got.token, got.url_from, got.token_from) == (
        "http://flag:2",
        "swl_flag",
        "--url",
        "--token",
    )


def test_environment_wins_over_files(tmp_path: Path) -> None:
    _token_file(tmp_path)
    env = {"SWEEPLAB_URL": "http://127.0.0.1:9", "SWEEPLAB_TOKEN": "swl_env"}
    got = resolve(env=env, cwd=tmp_path)
    assert (got.url, got.token, got.url_from, got.token_from) == (
        "http://127.0.0.1:9",
        "swl_env",
        "SWEEPLAB_URL",
        "SWEEPLAB_TOKEN",
    )


def test_local_stack_files_last(tmp_path: Path) -> None:
    path = _token_file(tmp_path)
    got = resolve(env={"SWEEPLAB_API_PORT": "8123"}, cwd=tmp_path)
    assert got.url == "http://127.0.0.1:8123" == local_url({"SWEEPLAB_API_PORT": "8123"})
    assert (got.token, got.token_from, got.url_from) == (
        "swl_local_secret",
        str(path),
        "local stack",
    )
    assert resolve(env={}, cwd=tmp_path).url == "http://127.0.0.1:8000"


def test_token_file_found_in_a_parent_directory_or_sweeplab_home(tmp_path: Path) -> None:
    _token_file(tmp_path)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert resolve(env={}, cwd=deep).token == "swl_local_secret"
    home = tmp_path / "home"
    _token_file(home, "swl_home")
    assert resolve(env={"SWEEPLAB_HOME": str(home)}, cwd=deep).token == "swl_home"
    # SWEEPLAB_HOME names the one place: no search elsewhere
    assert resolve(env={"SWEEPLAB_HOME": str(tmp_path / "none")}, cwd=deep).token is None


def test_local_token_is_never_sent_to_another_host(tmp_path: Path) -> None:
    _token_file(tmp_path)
    remote = resolve("https://sweeplab.example.org", env={}, cwd=tmp_path)
    assert (remote.token, remote.token_from) == (None, None)
    env_remote = resolve(env={"SWEEPLAB_URL": "http://10.0.0.5:8000"}, cwd=tmp_path)
    assert env_remote.token is None
    local = resolve("http://localhost:8000", env={}, cwd=tmp_path)
    assert local.token == "swl_local_secret"


def test_no_token_anywhere(tmp_path: Path) -> None:
    got = resolve(env={}, cwd=tmp_path)
    assert (got.token, got.token_from) == (None, None)
