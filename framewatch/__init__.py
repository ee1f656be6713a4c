"""framewatch: violence moderation for live video streams.

This package holds what the three sides share and nothing heavier: the command line,
the configuration schema, logging set-up and the embedded development services.
It never imports torch; the training commands import it lazily.
"""

__version__ = "0.1.0"
