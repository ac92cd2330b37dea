"""The messaging process of a BitDust node."""
