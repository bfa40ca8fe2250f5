"""`slapgrid format`: partition directories, users, addresses, and registration with the master."""
