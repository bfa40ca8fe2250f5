"""The master's certificate authority: who a certificate says its holder is, and issuing them.

`identity` encodes a computer, a partition or a user into a certificate's subject and reads
it back; `authority` keeps the CA and the server certificate in the master's PKI directory
and signs; `files` writes key material exclusively and atomically, 0600.
"""
