"""Inbox folder of enrollee files: exactly-once processing and the expected-file schedule."""
