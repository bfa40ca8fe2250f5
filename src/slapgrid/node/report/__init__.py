"""`slapgrid report`: usage to the master, then destruction of destroyed partitions."""
