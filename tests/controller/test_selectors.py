"""Label selectors with Kubernetes semantics, and an IPPool's placement rules (no root needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.selectors import LabelSelector, PoolRules, Requirement, SelectorError, Subject, pool_rules

keys = st.sampled_from(["app", "team", "tier", "zone"])
values = st.sampled_from(["a", "b", "c"])
label_sets = st.dictionaries(keys, values, max_size=4)


def selector(**data: object) -> LabelSelector:
    return LabelSelector.parse(data, path="sel")


@given(label_sets, keys, st.frozensets(values, min_size=1))
def test_in_and_not_in_are_complements(labels: dict[str, str], key: str, chosen: frozenset[str]) -> None:
    inside = Requirement(key, "In", chosen).matches(labels)
    assert inside == (labels.get(key) in chosen)
    assert Requirement(key, "NotIn", chosen).matches(labels) == (not inside)


@given(label_sets, keys)
def test_exists_and_does_not_exist_are_complements(labels: dict[str, str], key: str) -> None:
    assert Requirement(key, "Exists").matches(labels) == (key in labels)
    assert Requirement(key, "DoesNotExist").matches(labels) == (key not in labels)


@given(label_sets, st.data())
def test_match_labels_taken_from_the_labels_themselves_match(labels: dict[str, str], data: st.DataObject) -> None:
    subset = data.draw(st.sets(st.sampled_from(sorted(labels)) if labels else st.nothing()))
    assert selector(matchLabels={k: labels[k] for k in subset}).matches(labels)


@given(label_sets, label_sets, st.lists(st.tuples(keys, st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
                                                   st.lists(values, min_size=1, max_size=2)), max_size=3))
def test_a_selector_is_the_conjunction_of_its_parts(
    labels: dict[str, str], wanted: dict[str, str], expressions: list[tuple[str, str, list[str]]]
) -> None:
    exprs = [{"key": k, "operator": op, "values": vs if op in ("In", "NotIn") else []} for k, op, vs in expressions]
    whole = selector(matchLabels=wanted, matchExpressions=exprs)
    parts = [selector(matchLabels={k: v}) for k, v in wanted.items()] + [selector(matchExpressions=[e]) for e in exprs]
    assert whole.matches(labels) == all(part.matches(labels) for part in parts)
    assert (whole.first_miss(labels) is None) == whole.matches(labels)


def test_empty_selector_matches_everything() -> None:
    assert selector().matches({}) and selector(matchLabels={}, matchExpressions=[]).matches({"a": "b"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"matchExpressions": [{"key": "a", "operator": "Has"}]}, r"sel.matchExpressions\[0\].operator: 'Has' is not one of"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "In needs at least one value"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "Exists takes no values"),
        ({"matchExpressions": [{"operator": "Exists"}]}, r"\[0\].key: expected a label key"),
        ({"matchLabels": {"a": 1}}, "sel.matchLabels: expected a map"),
        ({"matchLabel": {}}, "sel: unknown field 'matchLabel'"),
    ],
)
def test_invalid_selectors_name_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        LabelSelector.parse(data, path="sel")


SUBJECT = Subject("web", "n1", pod_labels={"app": "shop"}, namespace_labels={"team": "blue"}, node_labels={"rack": "r1"})


@pytest.mark.parametrize(
    ("spec", "refusal"),
    [
        ({}, None),
        ({"disabled": True}, "disabled"),
        ({"namespaces": ["db", "ops"]}, "namespace web is not in namespaces [db, ops]"),
        ({"namespaces": ["web"], "namespaceSelector": {"matchLabels": {"team": "red"}}},
         "namespace web does not match namespaceSelector (wants team In (red), has team=blue)"),
        ({"nodes": ["n2"]}, "node n1 is not in nodes [n2]"),
        ({"nodeSelector": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
         "node n1 does not match nodeSelector (wants gpu Exists, has no label gpu)"),
        ({"podSelector": {"matchLabels": {"app": "db"}}}, "pod does not match podSelector (wants app In (db), has app=shop)"),
        ({"namespaces": ["web"], "nodes": ["n1"], "podSelector": {"matchLabels": {"app": "shop"}},
          "nodeSelector": {"matchLabels": {"rack": "r1"}}, "namespaceSelector": {}}, None),
    ],
)
def test_pool_rules_say_why_they_refuse(spec: dict[str, object], refusal: str | None) -> None:
    assert pool_rules(spec).refusal(SUBJECT) == refusal


def test_no_rules_refuse_nobody() -> None:
    assert PoolRules().refusal(Subject("x", "y")) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"namespaces": "web"}, "spec.namespaces: expected a list of names"),
        ({"disabled": "yes"}, "spec.disabled: expected true or false"),
        ({"podSelector": []}, "spec.podSelector: expected an object"),
    ],
)
def test_invalid_pool_rules_name_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        pool_rules(spec)
