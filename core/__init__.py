"""The ground floor every other package stands on: the error types and safe file writes.

It imports nothing of shopsearch's.
"""
