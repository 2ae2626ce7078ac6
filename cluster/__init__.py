"""Siaga's cluster topology on loopback (`cluster/up`): see `cluster.topology`."""
