"""What a SLAP user (not a node) does from this machine: client configuration, instances."""
