"""Hypothesis strategies for property-based tests of code that uses h2o-fsm, in either dialect.

Fault plans draw over the phases a dialect's server has (:func:`h2o_fsm.server.phases_of`) and every
fault kind. With ``recoverable=True`` they draw only faults after which a client following
docs/protocol.md leaves nothing live — provided it makes at least two DELETE attempts and its DELETE
timeout exceeds ``max_stall``: no ``create_then_error``, and in the ``delete`` phase only stalls and
single (``count=1``) 429/5xx answers, which a retried idempotent DELETE gets past. Every other fault
(any phase before delete, any count, any status) is allowed: the client fails and still deletes.
Without it, plans may make conversations undeletable; :func:`h2o_fsm.testing.assert_nothing_leaked`
accounts for exactly those.
"""

from __future__ import annotations

from hypothesis import strategies as st

from .._dialects import DEFAULT_DIALECT
from ..server._faults import ALLOWED, DialectName, Fault, FaultKind, FaultPhase, FaultPlan, phases_of

__all__ = [
    "fault_plans",
    "faults",
    "invalid_messages",
    "invalid_parameters",
    "messages",
    "parameters",
]

_STATUSES = (400, 404, 410, 422, 429, 500, 502, 503)
_RETRIED_STATUSES = (429, 500, 502, 503)


@st.composite
def faults(
    draw: st.DrawFn,
    phases: tuple[FaultPhase, ...] | None = None,
    max_stall: float = 0.05,
    max_token: int = 10,
    kinds: tuple[FaultKind, ...] | None = None,
    *,
    dialect: DialectName = DEFAULT_DIALECT,
    recoverable: bool = False,
) -> Fault:
    """One fault of any kind allowed in a phase (default: the phases of ``dialect``'s server).

    Stalls are at most ``max_stall`` seconds; ``recoverable`` as in the module docstring."""
    phase = draw(st.sampled_from(phases if phases is not None else phases_of(dialect)))
    allowed = ALLOWED[phase] if kinds is None else ALLOWED[phase] & set(kinds)
    if recoverable:
        allowed = allowed - {"create_then_error"}
    if not allowed:
        phase, allowed = "stream", ALLOWED["stream"]
    kind = draw(st.sampled_from(sorted(allowed)))
    delete_status = recoverable and phase == "delete"
    status = draw(st.sampled_from(_RETRIED_STATUSES if delete_status else _STATUSES))
    if phase == "delete" and status == 404:
        status = 500  # a 404 to DELETE means "already gone" by protocol: a fake one would make the server lie
    retry_after = draw(st.none() | st.sampled_from([0.0, 0.01])) if status == 429 else None
    return Fault(
        phase=phase,
        kind=kind,
        status=status,
        retry_after=retry_after,
        seconds=draw(st.floats(0, max_stall)),
        at_token=draw(st.integers(0, max_token)),
        count=1 if delete_status else draw(st.sampled_from([1, 1, 2, -1])),
    )


def fault_plans(
    max_faults: int = 3, *, dialect: DialectName = DEFAULT_DIALECT, recoverable: bool = False, **kw: object
) -> st.SearchStrategy[FaultPlan]:
    """Plans of up to ``max_faults`` faults for a ``dialect``'s server (``kw`` goes to :func:`faults`).

    With ``recoverable``, at most one ``delete`` fault per plan (two single 5xx answers could exhaust
    a client's two DELETE attempts)."""
    one = faults(dialect=dialect, recoverable=recoverable, **kw)  # type: ignore[arg-type]
    plans = st.lists(one, max_size=max_faults)
    if recoverable:
        plans = plans.filter(lambda fs: sum(f.phase == "delete" for f in fs) <= 1)
    return plans.map(FaultPlan)


_texts = st.text(min_size=1, max_size=40).filter(lambda s: bool(s.strip()))
_roles = st.sampled_from(["system", "user", "assistant"])


def messages(max_size: int = 5) -> st.SearchStrategy[list[dict[str, str]]]:
    """Valid message lists (the last one from the user)."""
    head = st.lists(st.fixed_dictionaries({"role": _roles, "content": _texts}), max_size=max_size - 1)
    return st.tuples(head, _texts).map(lambda t: [*t[0], {"role": "user", "content": t[1]}])


def invalid_messages() -> st.SearchStrategy[object]:
    """Message lists the API must refuse with ``ValueError``/``TypeError`` before any request."""
    return st.one_of(
        st.just([]),
        st.sampled_from(["", " ", "\n\t"]),  # a string is a prompt, but never an empty one
        st.none(),
        st.integers(),
        st.lists(st.fixed_dictionaries({"role": _roles}), min_size=1),
        st.lists(st.fixed_dictionaries({"content": _texts}), min_size=1),
        st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(["bot", "", "USER", "tool"]), "content": _texts}), min_size=1
        ),
        st.lists(
            st.fixed_dictionaries({"role": _roles, "content": st.integers() | st.none() | st.binary()}), min_size=1
        ),
        st.lists(st.integers() | st.text(), min_size=1),
    )


def parameters() -> st.SearchStrategy[dict[str, object]]:
    """Valid generation parameters."""
    return st.fixed_dictionaries(
        {},
        optional={
            "temperature": st.floats(0, 2),
            "top_p": st.floats(0.01, 1),
            "top_k": st.integers(1, 100),
            "max_new_tokens": st.integers(1, 64),
            "do_sample": st.booleans(),
            "repetition_penalty": st.floats(0.5, 2),
            "seed": st.integers(0, 2**31),
            "stop": st.lists(_texts, max_size=3),
        },
    )


def invalid_parameters() -> st.SearchStrategy[dict[str, object]]:
    """Generation parameters of the wrong type or range (refused with ``TypeError``/``ValueError``)."""
    return st.one_of(
        st.fixed_dictionaries({"temperature": st.text() | st.booleans() | st.floats(max_value=-0.01)}),
        st.fixed_dictionaries({"max_new_tokens": st.floats() | st.text() | st.integers(max_value=0)}),
        st.fixed_dictionaries({"do_sample": st.integers() | st.text()}),
        st.fixed_dictionaries({"stop": st.text() | st.lists(st.integers(), min_size=1)}),
        st.fixed_dictionaries({"custom": st.builds(object) | st.just(float("inf"))}),
    )
