"""`slapgrid prune`: unused Software Releases and shared parts, removed safely."""
