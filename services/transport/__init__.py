"""The transport process of a BitDust node."""
