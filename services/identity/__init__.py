"""The identity process of a BitDust node."""
