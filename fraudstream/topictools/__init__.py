"""Tools for people who consume and operate the topics: ``tail``, the dead-letter topic (``dlq``)."""
