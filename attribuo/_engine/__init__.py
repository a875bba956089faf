"""The shared machinery every attribution method is built on."""
