"""Draw the machine from its table (``_machine.STATES``/``TRANSITIONS``): mermaid and Graphviz dot.

A small exporter instead of transitions' ``GraphMachine`` (which keeps per-model entries forever and
needs graphviz for dot): the output is deterministic text, so ``diagrams/`` can be checked for
staleness by a test. ``h2o-fsm diagram --format mermaid|dot`` prints it.
"""

from __future__ import annotations

from typing import Literal

from ._phase import Phase
from ._table import STATES, TRANSITIONS, Edge

__all__ = ["DiagramFormat", "render", "to_dot", "to_mermaid"]

DiagramFormat = Literal["mermaid", "dot"]


def _label(edge: Edge) -> str:
    if edge.conditions:
        return f"{edge.trigger} [{edge.conditions}]"
    if edge.unless:
        return f"{edge.trigger} [not {edge.unless}]"
    return edge.trigger


def to_mermaid(highlight: Phase | None = None) -> str:
    lines = ["stateDiagram-v2", "    direction LR", f"    [*] --> {STATES[0].phase.value}"]
    for spec in STATES:
        lines.append(f"    {spec.phase.value} : {spec.doc}")
    for edge in TRANSITIONS:
        for source in edge.sources:
            lines.append(f"    {source.value} --> {edge.dest.value} : {_label(edge)}")
    for spec in STATES:
        if spec.phase.is_terminal:
            lines.append(f"    {spec.phase.value} --> [*]")
    if highlight is not None:
        lines.append("    classDef current fill:#ffd966,stroke:#b45f06,stroke-width:3px")
        lines.append(f"    class {highlight.value} current")
    return "\n".join(lines) + "\n"


def to_dot(highlight: Phase | None = None) -> str:
    lines = [
        "digraph h2o_fsm {",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        "    __start [shape=point];",
        f"    __start -> {STATES[0].phase.value};",
    ]
    for spec in STATES:
        attrs = [f'label="{spec.phase.value}\\n{spec.doc}"']
        if spec.phase.is_terminal:
            attrs.append("peripheries=2")
        if spec.phase is highlight:
            attrs.append('style="rounded,filled", fillcolor="#ffd966"')
        lines.append(f"    {spec.phase.value} [{', '.join(attrs)}];")
    for edge in TRANSITIONS:
        for source in edge.sources:
            lines.append(f'    {source.value} -> {edge.dest.value} [label="{_label(edge)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(fmt: DiagramFormat = "mermaid", highlight: Phase | None = None) -> str:
    """The diagram in ``fmt``, with ``highlight`` (e.g. a conversation's current state) marked."""
    if fmt == "mermaid":
        return to_mermaid(highlight)
    if fmt == "dot":
        return to_dot(highlight)
    raise ValueError(f"unknown diagram format {fmt!r}; expected 'mermaid' or 'dot'")
