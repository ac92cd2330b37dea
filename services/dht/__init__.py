"""The dht process of a BitDust node."""
