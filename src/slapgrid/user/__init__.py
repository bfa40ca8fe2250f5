"""What a SLAP user (not a node) keeps on this machine: client configuration, past requests."""
