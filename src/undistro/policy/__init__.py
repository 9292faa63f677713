"""Policies: loading, validation, templates, node facts, the compiled cache."""

from undistro.policy._cache import cache_key, load_policy
from undistro.policy._model import Policy
from undistro.policy._node import DEFAULT_NODE_CONFIG, Node, gather_facts, load_node

__all__ = [
    "DEFAULT_NODE_CONFIG",
    "Node",
    "Policy",
    "cache_key",
    "gather_facts",
    "load_node",
    "load_policy",
]
