"""Content from peers: the one SHA-256 store and each node's HTTP face."""
