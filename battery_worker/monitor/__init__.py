"""The price monitor: poll a price API, publish each new tick once to ``prices`` (``battery-worker monitor``).

``answers.py`` is pure (what an answer holds, what is new); ``http.py`` fetches, ``service.py`` runs the
loop and publishes.
"""
