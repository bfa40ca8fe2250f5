"""The networkcache the master serves its fleet: shacache (files by their SHA-512) and
shadir (signed entries by key), as slapos.libnetworkcache speaks to them."""
