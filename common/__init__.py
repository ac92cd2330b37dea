"""Code shared by every process of a BitDust node."""
