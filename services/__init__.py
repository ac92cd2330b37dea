"""The processes of a BitDust node, one package each."""
