"""``--json`` output, ``--version`` on every subcommand, and the shell completion scripts."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from h2o_fsm import __version__
from h2o_fsm.cli import main
from h2o_fsm.cli._parser import parser
from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate


def run_cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def objects(out: str) -> list[dict[str, object]]:
    assert out.endswith("\n")
    return [json.loads(line) for line in out.splitlines()]  # every line one JSON object


@pytest.mark.parametrize("dialect", ["h2o", "chat-ui"])
def test_chat_json_is_chunks_then_the_answer_with_its_metadata(dialect: str) -> None:
    with LocalServer(ServerConfig(max_tokens=8), dialect=dialect) as server:  # type: ignore[arg-type]
        code, out, err = run_cli("chat", "Hi", "--json", "--base-url", server.url, "--dialect", dialect)
        assert code == 0, err
        lines = objects(out)
        chunks, answer = lines[:-1], lines[-1]
        assert chunks and all(x["type"] == "chunk" for x in chunks)
        assert answer["type"] == "answer" and answer["text"] == "".join(str(x["text"]) for x in chunks)
        assert answer["text"] == "".join(generate([("user", "Hi")], 8))
        assert answer["dialect"] == dialect and isinstance(answer["conversation_id"], str)
        assert isinstance(answer["final"], dict) and answer["model"]
        assert server.accounting.live == 0


def test_chat_json_error_has_phase_status_and_id(server: LocalServer) -> None:
    server.set_faults([Fault("send", "status", status=404)])
    code, out, err = run_cli("chat", "Hi", "--json", "--base-url", server.url)
    assert code == 1 and err.count("\n") == 1  # the human line still on stderr
    (error,) = objects(out)
    assert error["type"] == "error" and error["phase"] == "send" and error["status"] == 404
    assert isinstance(error["conversation_id"], str) and error["error"] == "H2oStatusError"
    assert server.accounting.live == 0


def test_sweep_json(server: LocalServer, tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    assert run_cli("chat", "Hi", "--base-url", server.url, "--journal", str(journal))[0] == 0
    code, out, _ = run_cli("sweep", "--journal", str(journal), "--json")
    assert code == 0
    assert objects(out) == [{"type": "sweep", "deleted": 0, "already_gone": 0, "failed": 0, "skipped_leased": 0,
                             "stopped": 0, "bad_rows": 0, "skipped_live_process": 0}]  # the old key, deprecated


@pytest.mark.parametrize("command", sorted(parser().subcommands))
def test_version_is_accepted_on_every_subcommand(command: str) -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        import contextlib

        with contextlib.redirect_stdout(out):
            main([command, "--version"])
    assert exited.value.code == 0 and out.getvalue().strip() == f"h2o-fsm {__version__}"


def _bash_complete(words: list[str]) -> list[str]:
    script = run_cli("completion", "bash")[1]
    words_sh = " ".join(f"'{w}'" for w in words)
    probe = f'{script}\nCOMP_WORDS=({words_sh}); COMP_CWORD={len(words) - 1}; _h2o_fsm; printf "%s\\n" "${{COMPREPLY[@]}}"\n'
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completion_offers_the_parsers_commands_options_and_choices() -> None:
    assert set(_bash_complete(["h2o-fsm", ""])) >= set(parser().subcommands)
    assert _bash_complete(["h2o-fsm", "sw"]) == ["sweep"]
    assert "--base-url" in _bash_complete(["h2o-fsm", "chat", "--ba"])
    assert _bash_complete(["h2o-fsm", "chat", "--dialect", ""]) == ["auto", "h2o", "chat-ui"]  # auto: detected
    assert _bash_complete(["h2o-fsm", "completion", "f"]) == ["fish"]


def test_zsh_and_fish_scripts_name_every_command_and_option() -> None:
    zsh = run_cli("completion", "zsh")[1]
    assert "bashcompinit" in zsh and "complete -o default -F _h2o_fsm h2o-fsm" in zsh
    fish = run_cli("completion", "fish")[1]
    for name, sub in parser().subcommands.items():
        assert f"-a {name} " in fish
        for action in sub.recorded:
            for option in action.option_strings:
                if option.startswith("--"):
                    assert f"__fish_seen_subcommand_from {name}' -l {option[2:]}" in fish
    if shutil.which("fish"):
        result = subprocess.run(["fish", "--no-execute", "-c", fish], capture_output=True, text=True, timeout=30,
                                check=False)
        assert result.returncode == 0, result.stderr


def test_the_listing_commands_json(chatui_server: LocalServer) -> None:
    code, out, err = run_cli("models", "--json", "--base-url", chatui_server.url)
    assert code == 0, err
    *models, summary = objects(out)
    assert [m["id"] for m in models] == list(chatui_server.config.models)
    assert all(m["type"] == "model" for m in models) and [m["default"] for m in models] == [True] + [False] * (
        len(models) - 1)
    assert {"name", "display_name", "description", "multimodal", "tools", "reasoning"} <= set(models[0])
    assert summary == {"type": "models", "count": len(models)}

    code, out, err = run_cli("conversations", "--json", "--base-url", chatui_server.url)
    assert code == 0, err
    assert objects(out) == [{"type": "conversations", "count": 0}]  # a fresh session holds none
    code, out, err = run_cli("conversations", "--delete-all", "--yes", "--json", "--base-url", chatui_server.url)
    assert code == 0, err
    (deleted,) = objects(out)
    assert deleted["type"] == "deleted_all" and deleted["count"] in (0, None)


def test_the_listing_commands_json_error(server: LocalServer) -> None:
    # the 2023 dialect has no model list (refused before any request, a usage mistake): an error object on
    # stdout, the human line on stderr
    code, out, err = run_cli("models", "--json", "--base-url", server.url, "--dialect", "h2o")
    assert code == 2 and err.count("\n") == 1, err
    (error,) = objects(out)
    assert error["type"] == "error" and error["status"] is None and error["error"] == "H2oStateError"
    assert "the h2o dialect has no model list (chat-ui has one)" in error["message"]
