"""The storage process of a BitDust node."""
