"""The command line: thin click commands over the node, master and protocol layers."""
