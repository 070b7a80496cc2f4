"""Who may take addresses from a pool: Kubernetes label selectors and an IPPool's placement rules.

Pure: JSON of the API in (an IPPool's `spec`, labels as plain dicts), frozen dataclasses out. The
IPAM carries each pool's `PoolRules`; intent resolution asks them about one pod (`Subject`) and,
when a pool refuses, says why in a few words, because that answer ends up in a Kubernetes Event
on the pod and in the CNI error.

Label selectors follow Kubernetes (`metav1.LabelSelector`): `matchLabels` and `matchExpressions`
are ANDed; `In`/`NotIn` take a non-empty `values`, `Exists`/`DoesNotExist` none; `NotIn` and
`DoesNotExist` hold for a missing label. An empty selector matches everything. A missing one
places no restriction (unlike a workload's selector, a pool's is a restriction, not a choice).

A pool's rules are ANDed too: with `namespaces` and `namespaceSelector` both set, a pod's
namespace must be listed and match. So adding a rule can only narrow who uses a pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
Labels = Mapping[str, str]


class SelectorError(ValueError):
    """A selector or rule that Kubernetes would refuse; the message starts with the field's path."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Labels) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        inside = present and labels[self.key] in self.values
        return inside if self.operator == "In" else not inside

    def __str__(self) -> str:
        if self.operator in ("Exists", "DoesNotExist"):
            return f"{self.key} {self.operator}"
        return f"{self.key} {self.operator} ({', '.join(sorted(self.values))})"


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, data: Any, *, path: str) -> LabelSelector:
        """A `metav1.LabelSelector` as JSON; `path` names it in errors (`spec.podSelector`)."""
        if not isinstance(data, Mapping):
            raise SelectorError(f"{path}: expected an object with matchLabels and/or matchExpressions")
        unknown = set(data) - {"matchLabels", "matchExpressions"}
        if unknown:
            raise SelectorError(f"{path}: unknown field {sorted(unknown)[0]!r}")
        labels = data.get("matchLabels") or {}
        if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
            raise SelectorError(f"{path}.matchLabels: expected a map of label values (strings)")
        requirements = [Requirement(str(key), "In", frozenset({value})) for key, value in sorted(labels.items())]
        expressions = data.get("matchExpressions") or []
        if not isinstance(expressions, list):
            raise SelectorError(f"{path}.matchExpressions: expected a list")
        for index, expression in enumerate(expressions):
            requirements.append(_requirement(expression, path=f"{path}.matchExpressions[{index}]"))
        return cls(tuple(requirements))

    def matches(self, labels: Labels) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def first_miss(self, labels: Labels) -> Requirement | None:
        return next((r for r in self.requirements if not r.matches(labels)), None)


def _requirement(data: Any, *, path: str) -> Requirement:
    if not isinstance(data, Mapping):
        raise SelectorError(f"{path}: expected an object with key, operator and values")
    key, operator, values = data.get("key"), data.get("operator"), data.get("values") or []
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{path}.key: expected a label key")
    if operator not in OPERATORS:
        raise SelectorError(f"{path}.operator: {operator!r} is not one of {', '.join(OPERATORS)}")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"{path}.values: expected a list of strings")
    if operator in ("In", "NotIn") and not values:
        raise SelectorError(f"{path}.values: {operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise SelectorError(f"{path}.values: {operator} takes no values")
    return Requirement(key, operator, frozenset(values))


@dataclass(frozen=True)
class Subject:
    """What a pool's rules look at about one pod: its namespace, node and labels."""

    namespace: str
    node: str
    pod_labels: Labels = field(default_factory=dict)
    namespace_labels: Labels = field(default_factory=dict)
    node_labels: Labels = field(default_factory=dict)


@dataclass(frozen=True)
class PoolRules:
    """Which pods may take addresses from a pool. The default (no rules) is every pod."""

    namespaces: frozenset[str] | None = None
    namespace_selector: LabelSelector | None = None
    nodes: frozenset[str] | None = None
    node_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None
    disabled: bool = False

    def refusal(self, subject: Subject) -> str | None:
        """Why this pool refuses `subject` (a few words), or None when it may use the pool."""
        if self.disabled:
            return "disabled"
        checks = (
            ("namespace", subject.namespace, self.namespaces, self.namespace_selector, subject.namespace_labels),
            ("node", subject.node, self.nodes, self.node_selector, subject.node_labels),
            ("pod", None, None, self.pod_selector, subject.pod_labels),
        )
        for what, name, names, selector, labels in checks:
            if names is not None and name not in names:
                return f"{what} {name} is not in {what}s [{', '.join(sorted(names))}]"
            miss = None if selector is None else selector.first_miss(labels)
            if miss is not None:
                return f"{what}{'' if name is None else ' ' + name} does not match {what}Selector ({_explain(miss, labels)})"
        return None


def _explain(requirement: Requirement, labels: Labels) -> str:
    value = labels.get(requirement.key)
    has = f"has {requirement.key}={value}" if value is not None else f"has no label {requirement.key}"
    return f"wants {requirement}, {has}"


def pool_rules(spec: Mapping[str, Any], *, path: str = "spec") -> PoolRules:
    """The rules of an IPPool's `spec` (its other fields are the IPAM's business)."""
    return PoolRules(
        namespaces=_names(spec.get("namespaces"), path=f"{path}.namespaces"),
        namespace_selector=_selector(spec.get("namespaceSelector"), path=f"{path}.namespaceSelector"),
        nodes=_names(spec.get("nodes"), path=f"{path}.nodes"),
        node_selector=_selector(spec.get("nodeSelector"), path=f"{path}.nodeSelector"),
        pod_selector=_selector(spec.get("podSelector"), path=f"{path}.podSelector"),
        disabled=_flag(spec.get("disabled"), path=f"{path}.disabled"),
    )


def _names(data: Any, *, path: str) -> frozenset[str] | None:
    if data is None:
        return None
    if not isinstance(data, list) or not all(isinstance(item, str) and item for item in data):
        raise SelectorError(f"{path}: expected a list of names")
    return frozenset(data)


def _selector(data: Any, *, path: str) -> LabelSelector | None:
    return None if data is None else LabelSelector.parse(data, path=path)


def _flag(data: Any, *, path: str) -> bool:
    if data is None:
        return False
    if not isinstance(data, bool):
        raise SelectorError(f"{path}: expected true or false")
    return data


def labels_of(obj: Mapping[str, Any] | None) -> Labels:
    """An API object's `metadata.labels` (empty for a missing object)."""
    return _metadata_map(obj, "labels")


def annotations_of(obj: Mapping[str, Any] | None) -> Labels:
    """An API object's `metadata.annotations` (empty for a missing object)."""
    return _metadata_map(obj, "annotations")


_NONE: Labels = {}


def _metadata_map(obj: Mapping[str, Any] | None, name: str) -> Labels:
    """As served (the API's schema makes keys and values strings), not copied: this runs per ADD."""
    if obj is None:
        return _NONE
    found = (obj.get("metadata") or _NONE).get(name)
    return found if isinstance(found, Mapping) else _NONE
