"""The moderator dashboard and the feedback loop (docs/review.md): a Starlette app that reads Redis
and the evidence store, records decisions in ``framewatch:feedback``, and ``feedback export``,
which turns them into the training package's image–text data set."""
