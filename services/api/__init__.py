"""The api process of a BitDust node."""
