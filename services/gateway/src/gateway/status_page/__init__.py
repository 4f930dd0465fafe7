"""The operator status page: what it reads, how it is drawn, and how a browser signs in.

- ``metrics``: this gateway process's cache lookups and latency percentiles.
- ``markup``: numbers, tables, sparklines and the sign-in form as self-contained HTML.
- ``sections``: the page's sections from the data the route gathers.
- ``experiments``: the experiments section (the running one per variant, the latest ended).
- ``session``: the signed session cookie a person gets by signing in with a key.

Nothing here touches Redis or the network; ``gateway.routes.status`` gathers the data.
"""
