"""Policies: loading, validation, templates, node facts, the compiled cache."""

from undistro.policy._cache import load_policy, policy_digest
from undistro.policy._loader import MANIFEST, Policy, compile_policy
from undistro.policy._node import DEFAULT_NODE_CONFIG, Node, gather_facts, load_node

__all__ = [
    "DEFAULT_NODE_CONFIG",
    "MANIFEST",
    "Node",
    "Policy",
    "compile_policy",
    "gather_facts",
    "load_node",
    "load_policy",
    "policy_digest",
]
