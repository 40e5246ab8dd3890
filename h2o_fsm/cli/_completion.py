"""``h2o-fsm completion bash|zsh|fish``: a shell completion script generated from the argparse parser,
so it always offers exactly the commands, options and choices the parser has.

Install: ``eval "$(h2o-fsm completion bash)"`` in ``~/.bashrc`` (zsh: the same with ``zsh`` in
``~/.zshrc``); fish: ``h2o-fsm completion fish > ~/.config/fish/completions/h2o-fsm.fish``.
"""

from __future__ import annotations

import shlex

from ._parser import _Parser

__all__ = ["SHELLS", "script"]

SHELLS = ("bash", "zsh", "fish")
_PROG = "h2o-fsm"


def _commands(p: _Parser) -> dict[str, _Parser]:
    return dict(p.subcommands)


def _options(p: _Parser) -> list[tuple[str, tuple[str, ...] | None, bool, str]]:
    """(long option, its choices, whether it takes a value, help) of each option of ``p``."""
    found = []
    for action in p.recorded:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs:
            continue
        choices = tuple(str(c) for c in action.choices) if action.choices else None
        found.append((longs[0], choices, action.nargs != 0, (action.help or "").split(" (")[0]))
    return found


def _positional_choices(p: _Parser) -> tuple[str, ...]:
    for action in p.recorded:
        if not action.option_strings and action.choices:
            return tuple(str(c) for c in action.choices)
    return ()


def _bash(p: _Parser) -> str:
    commands = _commands(p)
    cases = []
    for name, sub in commands.items():
        opts = " ".join(o for o, *_ in _options(sub))
        words = " ".join((*_positional_choices(sub), opts))
        choice_cases = "".join(
            f"            {o}) COMPREPLY=($(compgen -W {shlex.quote(' '.join(ch))} -- \"$cur\")); return;;\n"
            for o, ch, _, _ in _options(sub) if ch
        )
        cases.append(
            f"        {name})\n          case \"$prev\" in\n{choice_cases}          esac\n"
            f"          COMPREPLY=($(compgen -W {shlex.quote(words)} -- \"$cur\"));;\n"
        )
    top = " ".join((*commands, *(o for o, *_ in _options(p))))
    return (
        f"# {_PROG} completion for bash (generated from its parser)\n"
        "_h2o_fsm() {\n"
        "    local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
        "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
        f"        COMPREPLY=($(compgen -W {shlex.quote(top)} -- \"$cur\")); return\n"
        "    fi\n"
        "    case \"${COMP_WORDS[1]}\" in\n"
        + "".join(cases)
        + "    esac\n"
        "}\n"
        f"complete -o default -F _h2o_fsm {_PROG}\n"
    )


def _fish(p: _Parser) -> str:
    commands = _commands(p)
    lines = [f"# {_PROG} completion for fish (generated from its parser)", f"complete -c {_PROG} -f"]
    for name, sub in commands.items():
        about = (sub.description or name).split(". ")[0]
        lines.append(f"complete -c {_PROG} -n __fish_use_subcommand -a {name} -d {shlex.quote(about[:60])}")
        for choice in _positional_choices(sub):
            lines.append(f"complete -c {_PROG} -n '__fish_seen_subcommand_from {name}' -a {choice}")
        for option, choices, takes_value, text in _options(sub):
            line = f"complete -c {_PROG} -n '__fish_seen_subcommand_from {name}' -l {option[2:]}"
            if takes_value:
                line += " -r"
            if choices:
                line += f" -a {shlex.quote(' '.join(choices))}"
            lines.append(line + (f" -d {shlex.quote(text[:60])}" if text else ""))
    return "\n".join(lines) + "\n"


def script(shell: str, p: _Parser) -> str:
    """The completion script for ``shell`` (zsh: the bash one through ``bashcompinit``)."""
    if shell == "fish":
        return _fish(p)
    if shell == "zsh":
        return f"# {_PROG} completion for zsh\nautoload -U +X bashcompinit && bashcompinit\n" + _bash(p)
    return _bash(p)
