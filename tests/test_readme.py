"""Every ```python block of README.md runs as written: scripts with python, test examples with pytest in an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from support import emulator

from h2o_fsm.server import LocalServer, ServerConfig

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks() -> list[tuple[str, str]]:
    """(section heading, code) of every python block, in order."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        if match.group(1) != "python":
            continue
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
        found.append((headings[-1] if headings else "top", match.group(2)))
    return found


BLOCKS = _blocks()
IDS = [f"{i}-{re.sub(r'[^a-z]+', '-', heading.lower()).strip('-')}" for i, (heading, _) in enumerate(BLOCKS)]
SCRIPTS = [(code, id_) for (_, code), id_ in zip(BLOCKS, IDS) if not re.search(r"^(async )?def test_", code, re.M)]
TESTS = [(code, id_) for (_, code), id_ in zip(BLOCKS, IDS) if re.search(r"^(async )?def test_", code, re.M)]


def _plugin_registered() -> bool:
    return any(ep.value.startswith("h2o_fsm.testing.plugin") for ep in entry_points(group="pytest11"))


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "H2O_FSM_"))}
    env.update(extra)
    return env


def test_the_readme_has_the_examples_it_should() -> None:
    assert len(SCRIPTS) >= 4 and len(TESTS) >= 3
    shell = [m.group(2) for m in _FENCE.finditer(README.read_text(encoding="utf-8")) if m.group(1) == "sh"]
    first = shell[0].splitlines()
    assert len(first) == 2 and first[0].endswith("h2o-fsm demo") and "pytest" in first[1]  # CI reads line 2


def test_the_examples_need_one_server_url() -> None:
    """Followed top to bottom: the setup block serves one server (chat-ui's) and exports its URL; every
    example reads that URL and detects the dialect (none assumes the 2023 protocol's client default)."""
    text = README.read_text(encoding="utf-8")
    setup = text[text.index("## Running the examples"):].split("```sh\n", 1)[1].split("```", 1)[0]
    serves = [line for line in setup.splitlines() if "h2o-fsm serve" in line]
    assert len(serves) == 1 and "--dialect chat-ui" in serves[0] and "export H2O_FSM_BASE_URL=" in setup
    for code, id_ in SCRIPTS:
        assert 'os.environ["H2O_FSM_BASE_URL"]' in code, id_
        assert re.search(r'dialect ?= ?"auto"', code), id_  # one URL is enough: the server says which protocol


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, LocalServer]]:
    with emulator(ServerConfig(max_tokens=12)) as h2o, emulator(ServerConfig(max_tokens=12), dialect="chat-ui") as cu:
        yield {"h2o": h2o, "chat-ui": cu}


# every example against the README's one server (chat-ui's); those that use nothing of chat-ui's own
# (no "chat-ui" in them) against the 2023 server too: dialect="auto" makes the same code run on both
RUNS = [(code, id_, "chat-ui") for code, id_ in SCRIPTS] + [
    (code, id_, "h2o") for code, id_ in SCRIPTS if "chat-ui" not in code]


@pytest.mark.parametrize(("code", "dialect"), [(c, d) for c, _, d in RUNS], ids=[f"{i}-{d}" for _, i, d in RUNS])
def test_script_example_runs(code: str, dialect: str, servers: dict[str, LocalServer], tmp_path: Path) -> None:
    server = servers[dialect]
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    before = server.accounting.snapshot()
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_clean_env(H2O_FSM_BASE_URL=server.url),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the example printed nothing"
    assert result.stdout.endswith("\n")  # a streamed answer does not run into the next line
    after = server.accounting.snapshot()
    assert after["created"] > before["created"]  # it really talked to the server
    assert after["live"] == 0 and after["deleted_twice"] == 0


@pytest.mark.parametrize("code", [c for c, _ in TESTS], ids=[i for _, i in TESTS])
def test_test_example_passes_with_plain_pytest(code: str, tmp_path: Path) -> None:
    if "h2o_server" in code and not _plugin_registered():
        pytest.skip("the h2o_server fixture comes from the pytest11 entry point, not installed in this checkout")
    (tmp_path / "test_example.py").write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", result.stdout) and "skipped" not in result.stdout
