"""Capabilities: what components offer each other beyond batch attributes, checked when a
run is composed.

A component's *capabilities* are lower-case words for what it offers (an encoder:
``per_residue``, ``per_protein``, ``structure``, ``vectors``, see
:data:`~protsteps.components.ENCODER_CAPABILITIES`; a teacher: ``tail``), its *needs* what it
asks of the others (:class:`~protsteps.components.Need`): ``"teacher"``,
``"teacher.tail"``, ``"encoder.per_residue"``, ``"batch>=2"``. Both are declared on the
:class:`~protsteps.components.Component` (a list, or a function of the config), so that
:func:`~protsteps.model.compose` refuses a composition that cannot work before it loads
weights, featurizes or writes anything, in one line naming both components and what is
missing. Capabilities a plugin does not declare are read from the built component.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .components import ENCODER_CAPABILITIES, TEACHER_CAPABILITIES, BuildContext, Component, Need
from .errors import CompositionError, ConfigError, ProtstepsError

__all__ = [
    "Part",
    "as_need",
    "built_capabilities",
    "check_declarations",
    "check_needs",
    "declared_capabilities",
    "declared_needs",
    "describe_entry",
    "unmet",
]

_WORD = re.compile(r"^[a-z][a-z0-9_]*$")
_NEED = re.compile(
    r"^(?:(?P<kind>teacher|encoder)(?:\.(?P<capability>[a-z][a-z0-9_]*))?|batch>=(?P<size>[0-9]+))$"
)
_DESCRIPTIONS = {"encoder": ENCODER_CAPABILITIES, "teacher": TEACHER_CAPABILITIES}
#: the kinds that may take part in ``name = "auto"``
AUTO_KINDS = ("teacher", "scheme")


def as_need(item: Any, owner: str) -> Need:
    """``item`` (a :class:`Need` or a string) as a checked :class:`Need`."""
    need = Need(item) if isinstance(item, str) else item
    if not isinstance(need, Need) or not isinstance(need.what, str) or not _NEED.match(need.what):
        raise ConfigError(
            f"{owner}: need {item!r} is not 'teacher', 'teacher.CAPABILITY', 'encoder.CAPABILITY' "
            "or 'batch>=N'"
        )
    return need


def _words(items: Iterable[Any], owner: str) -> frozenset[str]:
    if isinstance(items, str):
        raise ConfigError(f"{owner}: capabilities must be a list of words, got the string {items!r}")
    out = set()
    for item in items:
        if not isinstance(item, str) or not _WORD.match(item):
            raise ConfigError(f"{owner}: capability {item!r} is not a lower-case word (per_residue, tail)")
        out.add(item)
    return frozenset(out)


def check_declarations(kind: str, component: Component, owner: str) -> None:
    """Refuse, when a plugin registers ``component``, declarations that cannot be read: a
    capability that is not a lower-case word, a need that does not parse, ``auto`` on a kind
    without ``auto`` or not an integer. Functions of the config are checked when called."""
    if component.capabilities is not None and not callable(component.capabilities):
        _words(component.capabilities, owner)
    if not callable(component.needs):
        if isinstance(component.needs, str):
            raise ConfigError(f"{owner}: needs must be a list, got the string {component.needs!r}")
        for item in component.needs:
            as_need(item, owner)
    if component.auto is not None:
        if kind not in AUTO_KINDS:
            raise ConfigError(f"{owner}: only teachers and schemes take part in 'auto'")
        if isinstance(component.auto, bool) or not isinstance(component.auto, int):
            raise ConfigError(f"{owner}: auto must be an integer (its place in 'auto') or None")


def _evaluate(declaration: Any, config: Any, what: str, entry: Any) -> Any:
    if not callable(declaration):
        return declaration
    try:
        return declaration(config)
    except ProtstepsError:
        raise
    except Exception as exc:
        raise CompositionError(
            f"{entry.kind} '{entry.name}' of plugin '{entry.plugin}': its {what} cannot be read from its "
            f"config: {type(exc).__name__}: {exc}"
        ) from exc


def _owner(entry: Any) -> str:
    return f"{entry.kind} '{entry.name}' of plugin '{entry.plugin}'"


def declared_capabilities(entry: Any, config: Any) -> frozenset[str] | None:
    """The capabilities ``entry`` declares under ``config``; ``None`` when it declares none
    (they are read from the built component)."""
    if entry.capabilities is None:
        return None
    return _words(_evaluate(entry.capabilities, config, "capabilities", entry), _owner(entry))


def declared_needs(entry: Any, config: Any) -> tuple[Need, ...]:
    """The needs ``entry`` declares under ``config``."""
    items = _evaluate(entry.needs, config, "needs", entry)
    if isinstance(items, str):
        raise CompositionError(f"{_owner(entry)}: needs must be a list, got the string {items!r}")
    return tuple(as_need(item, _owner(entry)) for item in items)


def built_capabilities(kind: str, component: Any, declared: frozenset[str] | None) -> frozenset[str]:
    """What a built component offers: ``declared`` when the plugin declared them, else its
    ``capabilities`` attribute, else what the kind's contract says it has (an encoder
    ``per_residue`` and ``per_protein``, ``structure`` with a ``structure_dim``, ``vectors``
    with ``vector_irreps``; a teacher ``tail`` with tail parameters)."""
    if declared is not None:
        return declared
    attribute = getattr(component, "capabilities", None)
    if attribute is not None and not callable(attribute):
        return _words(attribute, f"{kind} {type(component).__name__}")
    found: set[str] = set()
    if kind == "encoder":
        found |= {"per_residue", "per_protein"}
        if getattr(component, "structure_dim", None) is not None:
            found.add("structure")
        if getattr(component, "vector_irreps", None):
            found.add("vectors")
    elif kind == "teacher":
        tail = getattr(component, "tail_parameters", None)
        if callable(tail) and tail():
            found.add("tail")
    return frozenset(found)


@dataclasses.dataclass(frozen=True)
class Part:
    """One component of a composition, for :func:`check_needs`.

    capabilities: what it offers; ``None`` while unknown (not built yet, not declared).
    """

    kind: str
    name: str
    plugin: str = ""
    capabilities: frozenset[str] | None = None
    needs: tuple[Need, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} '{self.name}'"


def _capability_text(kind: str, capability: str) -> str:
    return _DESCRIPTIONS.get(kind, {}).get(capability, f"the capability '{capability}'")


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _offers(part: Part) -> str:
    return ", ".join(sorted(part.capabilities or ())) or "nothing"


def unmet(
    need: Need,
    needer: Part,
    parts: Sequence[Part],
    *,
    batch_size: int | None = None,
    teacher_note: str = "",
) -> str | None:
    """Why ``need`` of ``needer`` is not met by ``parts`` (one line naming both components and
    what is missing), or ``None`` when it is met or cannot be known yet (a component whose
    capabilities are unknown, a batch size that varies)."""
    match = _NEED.match(need.what)
    assert match is not None  # checked by as_need
    hint = f"; {need.hint}" if need.hint else ""
    if match["size"] is not None:
        size = int(match["size"])
        if batch_size is None or batch_size >= size:
            return None
        return (
            f"{needer.label} needs batches of at least {size} proteins, and [train] batch_size is "
            f"{batch_size}; set --batch-size {size} or more{hint}"
        )
    kind, capability = match["kind"], match["capability"]
    providers = [p for p in parts if p.kind == kind]
    if not providers:
        if kind != "teacher":
            return None
        why = f" ({teacher_note})" if teacher_note else ' (teacher = "none")'
        return (
            f"{needer.label} needs a teacher, and the run has none{why}; name one with --teacher NAME, "
            f"or use another {needer.kind}{hint}"
        )
    if capability is None:
        return None
    provider = providers[0]
    if provider.capabilities is None or capability in provider.capabilities:
        return None
    return (
        f"{needer.label} needs {_capability_text(kind, capability)} from the {kind}, which "
        f"{provider.label} does not offer (it offers: {_offers(provider)}); use {_a(kind)} {kind} that offers "
        f"'{capability}', or another {needer.kind}{hint}"
    )


def check_needs(parts: Sequence[Part], *, batch_size: int | None = None, teacher_note: str = "") -> None:
    """Raise :class:`~protsteps.errors.CompositionError` for the first need of ``parts`` that
    the others do not meet (see :func:`unmet`)."""
    for needer in parts:
        for need in needer.needs:
            reason = unmet(need, needer, parts, batch_size=batch_size, teacher_note=teacher_note)
            if reason is not None:
                raise CompositionError(reason)


def describe_entry(entry: Any) -> dict[str, Any]:
    """What ``protsteps plugins show`` and ``--json`` list about a registered component, under
    its default config: ``requires`` (batch attributes), ``provides`` (a featurizer's),
    ``capabilities`` (``None``: read from the built component), ``needs`` and ``auto``.
    ``requires`` is ``None`` when only the built component knows it; a featurizer's
    ``provides`` is that of one built with its default settings."""
    out: dict[str, Any] = {}
    for attribute in ("requires", "provides"):
        value = getattr(entry.factory, attribute, None)
        out[attribute] = sorted(value) if isinstance(value, (set, frozenset, list, tuple)) else None
    if entry.kind == "featurizer":
        # what a featurizer fills depends on its settings: ask one built with the defaults
        # (featurizers are cheap to build: they run in every worker process)
        try:
            built = entry.factory(entry.config(), BuildContext())
            out["provides"] = sorted(built.provides)
        except Exception:
            out["provides"] = None
    else:
        out.pop("provides")
    try:
        config = entry.config()
        capabilities = declared_capabilities(entry, config)
        needs = declared_needs(entry, config)
    except Exception as exc:  # shown, not raised: listing must work for a broken plugin
        out.update(capabilities=None, needs=[], declarations_error=f"{type(exc).__name__}: {exc}")
    else:
        out["capabilities"] = sorted(capabilities) if capabilities is not None else None
        out["needs"] = [need.what for need in needs]
    out["capabilities_depend_on_config"] = callable(entry.capabilities) or callable(entry.needs)
    out["auto"] = entry.auto
    return out
