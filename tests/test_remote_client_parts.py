"""The remote client's parts that need no server: where its key comes from, the names results get,
batches cut to a request's limits, its record of a push, and the one-line errors of the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cvunet_matting.commands.cli import main
from cvunet_matting.commands.client import folder as local
from cvunet_matting.commands.client.api import Part, closing_size, part_size
from cvunet_matting.commands.client.credentials import config_path, load_credentials
from cvunet_matting.commands.client.errors import ClientError
from cvunet_matting.commands.client.state import STATE_NAME, Entry, load_state
from tests import support

SERVER = "http://matting.example:8080"


def write_config(home: Path, text: str, mode: int = 0o600) -> Path:
    path = config_path({"XDG_CONFIG_HOME": str(home)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_key_comes_from_the_environment_before_the_file_and_the_server_from_the_flag_first(tmp_path):
    write_config(tmp_path, f'server = "{SERVER}/"\napi_key = "from-file"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert load_credentials(None, env) == load_credentials(None, env)
    assert (load_credentials(None, env).server, load_credentials(None, env).key) == (SERVER, "from-file")
    env["CVUNET_API_KEY"] = "from-env"
    assert load_credentials("https://other.example", env).key == "from-env"
    assert load_credentials("https://other.example", env).server == "https://other.example"


def test_a_config_file_others_may_read_is_refused_and_says_how_to_fix_it(tmp_path):
    path = write_config(tmp_path, 'api_key = "secret"\n', mode=0o644)
    with pytest.raises(ClientError, match=f"mode 0644\\): chmod 600 {path}"):
        load_credentials(SERVER, {"XDG_CONFIG_HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("text", "server", "message"),
    [
        ("", SERVER, "no API key: set CVUNET_API_KEY"),
        ('api_key = "k"\n', None, "no server: pass --server URL"),
        ('api_key = "k"\n', "ftp://x", "http:// or https://"),
        ('api_key = "k"\ntoken = "t"\n', SERVER, "only server"),
        ("api_key = k\n", SERVER, "client.toml"),
    ],
)
def test_missing_or_wrong_settings_say_what_to_do(tmp_path, text, server, message):
    write_config(tmp_path, text)
    with pytest.raises(ClientError, match=message.replace("(", "\\(")):
        load_credentials(server, {"XDG_CONFIG_HOME": str(tmp_path)})


def test_results_mirror_the_tree_and_two_inputs_with_one_stem_keep_their_whole_names():
    stems = local.result_stems(["a.jpg", "sub/a.jpg", "sub/b.png", "sub/b.jpg", "c"])
    assert stems == {"a.jpg": "a", "sub/a.jpg": "sub/a", "sub/b.png": "sub/b.png", "sub/b.jpg": "sub/b.jpg", "c": "c"}


@pytest.mark.parametrize(
    ("sent", "safe"),
    [("../../etc/passwd", "etc/passwd"), ("/abs/x.png", "abs/x.png"), ("a\\..\\b.png", "a/b.png"), ("..", "")],
)
def test_a_servers_file_name_never_leaves_the_output_folder(sent, safe):
    assert local.safe_relative(sent) == safe


def test_batches_hold_at_most_the_files_and_the_bytes_one_request_may(tmp_path):
    files = [local.LocalFile(f"f{i}.png", tmp_path / f"f{i}.png", 1000) for i in range(10)]
    assert [len(b) for b in local.batches(files, 4, 10**6)] == [4, 4, 2]
    one = part_size(Part("f0.png", b"x" * 1000))
    assert [len(b) for b in local.batches(files, 100, closing_size() + 3 * one)] == [3, 3, 3, 1]
    assert local.fits_alone(files[0], closing_size() + one) and not local.fits_alone(files[0], closing_size() + one - 1)


def test_a_name_outside_ascii_goes_as_rfc_5987s_filename_star():
    assert b"filename*=UTF-8''%C3%A9t%C3%A9%2Fa.png" in Part("été/a.png", b"").header("b")
    assert b'filename="sub/a b.png"' in Part("sub/a b.png", b"").header("b")
    assert b"filename*=" in Part('say "hi".png', b"").header("b")


def test_the_record_resumes_its_own_push_only(tmp_path):
    state = load_state(tmp_path, SERVER, Path("/photos"))
    state.files["a.png"] = Entry("abc", "batch-1", output="a.png")
    state.save()
    again = load_state(tmp_path, SERVER, Path("/photos"))
    assert again.files == {"a.png": Entry("abc", "batch-1", output="a.png")} and again.batches() == ["batch-1"]
    with pytest.raises(ClientError, match="choose another --out"):
        load_state(tmp_path, SERVER, Path("/other"))
    with pytest.raises(ClientError, match="choose another --out"):
        load_state(tmp_path, "http://elsewhere", Path("/photos"))
    (tmp_path / STATE_NAME).write_text(json.dumps({"version": 1, "server": SERVER, "folder": "/photos", "files": 3}))
    with pytest.raises(ClientError, match="remove it to start over"):
        load_state(tmp_path, SERVER, Path("/photos"))


def run_client(tmp_path: Path, *args: str, key: str = "some-key"):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "CVUNET_API_KEY": key}
    return CliRunner().invoke(main, ["client", *args], env=env)


def test_the_commands_errors_are_one_line_and_a_non_zero_exit(tmp_path):
    (tmp_path / "photos").mkdir()
    nowhere = f"http://127.0.0.1:{support.free_port()}"  # nothing listens there
    down = run_client(tmp_path, "push", str(tmp_path / "photos"), "--server", nowhere)
    assert down.exit_code == 1 and down.output.startswith(f"error: cannot reach {nowhere}")
    missing = run_client(tmp_path, "push", str(tmp_path / "nope"), "--server", nowhere)
    assert missing.exit_code == 1 and f"error: no such folder: {tmp_path / 'nope'}" in missing.output
    inside = run_client(
        tmp_path, "push", str(tmp_path / "photos"), "--server", nowhere, "-o", str(tmp_path / "photos/o")
    )
    assert inside.exit_code == 1 and "lies inside" in inside.output
    no_key = run_client(tmp_path, "get", "b1", "--server", nowhere, "-o", str(tmp_path / "o"), key="")
    assert no_key.exit_code == 1 and "no API key" in no_key.output
    for result in (down, missing, inside, no_key):
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output
